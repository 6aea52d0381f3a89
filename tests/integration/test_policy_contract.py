"""A user's policy that breaks the `Policy` contract fails in one line naming what it did and
what is allowed: before training where that can be known (members, record, state), else at the
control step (helper-found: illegal decisions were lifecycle tracebacks or became other
decisions, a numpy value in the state completed a run no resume could load, a numpy value in
`describe()` lost summary.json at the end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from esper.app import build
from esper.config import ConfigError
from esper.contracts import Decision, Observation, SeedState
from esper.policy.contract import PolicyError
from tests.conftest import ROOT, run_cli

HERE = "tests.integration.test_policy_contract"


class Scripted:
    """Germinates the first slot at epoch 0, then does what `mode` says once its seed is in
    the state that mode needs (or at once)."""

    name = "scripted"
    may_germinate = True

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.steps: Any = np.int64(0) if mode == "numpy_state_at_birth" else 0
        self.best: Any = None

    def decide(self, obs: Observation) -> Any:
        self.steps += 1
        first = obs.slots[0]
        if self.mode == "numpy_state":
            self.best = np.float64(obs.val_accuracy)  # a numpy value once training runs
        if self.mode == "not_a_list":
            return Decision(action="wait")
        if self.mode == "unknown_slot":
            return [Decision(action="cull", slot="nope")]
        if first.state is SeedState.DORMANT and self.steps == 1:
            blueprint = obs.allowed_blueprints[first.name][0]
            if self.mode == "advance_dormant":
                return [Decision(action="advance", slot=first.name)]
            if self.mode == "wrong_blueprint":
                return [Decision(action="germinate", slot=first.name, blueprint="conv_residual")]
            germinate = Decision(action="germinate", slot=first.name, blueprint=blueprint)
            return [germinate, germinate] if self.mode == "twice" else [germinate]
        if self.mode == "fossilize_training" and first.state is SeedState.TRAINING:
            return [Decision(action="fossilize", slot=first.name)]
        if first.state is SeedState.GERMINATED and first.kernel_ready:
            return [Decision(action="advance", slot=first.name)]
        if self.mode == "ok" and first.state is SeedState.TRAINING:
            return [Decision(action="advance", slot=first.name)]  # the gates may refuse
        return [Decision(action="wait")]

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.best = state["steps"], state["best"]

    def describe(self) -> dict[str, Any]:
        if self.mode == "numpy_describe":
            return {"mode": self.mode, "threshold": np.float32(0.01)}
        return {"mode": self.mode}


class Nameless(Scripted):
    name = None  # type: ignore[assignment]

    def __getattribute__(self, item: str) -> Any:
        if item in ("name", "describe"):
            raise AttributeError(item)
        return super().__getattribute__(item)


def policy(target: str, mode: str | None = None) -> tuple[str, ...]:
    chosen = ("policy=none", "~policy", f"+policy._target_={HERE}.{target}")
    return (*chosen, f"+policy.mode={mode}") if mode else chosen


@pytest.mark.parametrize(
    ("target", "mode", "said"),
    [
        ("Nameless", None, f"policy: {HERE}.Nameless has no name, describe; a policy has name, "),
        (
            "Scripted",
            "numpy_describe",
            f"policy: {HERE}.Scripted.describe() returns a numpy.float32 at ['threshold'], which "
            "the run's record (summary.json) cannot hold",
        ),
        (
            "Scripted",
            "numpy_state_at_birth",
            f"policy: {HERE}.Scripted: state_dict() holds a numpy.int64 at ['steps'], which a "
            "checkpoint cannot hold",
        ),
    ],
    ids=["members", "describe", "state"],
)
def test_what_can_be_known_before_training_is_refused_at_build(make_config, target, mode, said):
    cfg = make_config("logger=none", *policy(target, mode))
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert said in str(refused.value) and "\n" not in str(refused.value), refused.value


CONTROL_CASES = [
    (
        "advance_dormant",
        "policy 'scripted' decided advance on slot 'blocks.0', which is DORMANT: advance needs "
        "GERMINATED or TRAINING; allowed there now: wait, germinate",
    ),
    (
        "fossilize_training",
        "policy 'scripted' decided fossilize on slot 'blocks.0', which is TRAINING: fossilize "
        "needs BLENDING; allowed there now: wait, advance, cull",
    ),
    (
        "twice",
        "policy 'scripted' decided germinate on slot 'blocks.0', which is GERMINATED: "
        "germinate needs DORMANT",
    ),
    ("unknown_slot", "policy 'scripted' decided cull on slot 'nope'; the model's slots: blocks.0"),
    ("not_a_list", "policy 'scripted': decide() returned Decision; allowed: a list of"),
    ("wrong_blueprint", "policy 'scripted' chose blueprint 'conv_residual' for blocks.0; allowed"),
    (
        "numpy_state",
        "policy 'scripted': state_dict() holds a numpy.float64 at ['best'], which a checkpoint "
        "cannot hold (it is loaded with weights_only=True)",
    ),
]


@pytest.mark.parametrize(("mode", "said"), CONTROL_CASES, ids=[c[0] for c in CONTROL_CASES])
def test_a_broken_decision_or_state_fails_the_run_with_its_line(make_config, mode, said):
    cfg = make_config(
        "logger=none", "trainer.max_epochs=6", "model.sites=[blocks.0]", *policy("Scripted", mode)
    )
    experiment = build(cfg)
    with pytest.raises(PolicyError) as failed:
        experiment.run()
    assert said in str(failed.value) and "\n" not in str(failed.value), failed.value
    summary = json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    assert summary["status"] == "failed" and said in summary["error"], summary["error"]


def test_a_legal_script_trains_its_seed(make_config) -> None:
    """The same policy, legal: its seed germinates, trains and blends, so the cases above fail
    for what they decide, not for the script."""
    cfg = make_config(
        "logger=none", "trainer.max_epochs=8", "model.sites=[blocks.0]", *policy("Scripted", "ok")
    )
    record = build(cfg).run()
    assert record.status == "completed", record.error
    reached = {a.to_state.value for a in record.adaptations}
    assert {"GERMINATED", "TRAINING", "BLENDING"} <= reached, reached


def test_run_py_says_a_broken_policy_in_one_line(tmp_path) -> None:
    result = run_cli(
        f"run_dir={tmp_path / 'run'}",
        "logger=none",
        "trainer.max_epochs=4",
        "trainer.progress=false",
        "model.sites=[blocks.0]",
        *policy("Scripted", "advance_dormant"),
        cwd=ROOT,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels"), "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    said = [line for line in result.stderr.splitlines() if line.startswith("esper:")]
    assert said == [
        "esper: the run failed: policy 'scripted' decided advance on slot 'blocks.0', which is "
        "DORMANT: advance needs GERMINATED or TRAINING; allowed there now: wait, germinate"
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
