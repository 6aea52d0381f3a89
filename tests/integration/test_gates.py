"""Quality gates and non-finite seeds, through a real trainer built from config."""

from __future__ import annotations

import json
import math

import torch

from esper.app import build
from esper.contracts import Decision
from tests.conftest import KEEP_IT, ONE_EARLY_SEED


def trainer_with_seed(make_config, tmp_path, *overrides: str):
    experiment = build(
        make_config(
            "logger=none",
            "trainer.checkpoint=false",
            "kernels.async_compile=false",
            "kernels.wait_epochs=0",
            "policy=none",
            *overrides,
            run_dir=tmp_path / "run",
        )
    )
    trainer = experiment.trainer
    trainer.control.apply(Decision(action="germinate", slot="blocks.0", blueprint="residual_mlp"))
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    return experiment, trainer, trainer.model.slot("blocks.0")


def events(experiment, kind: str) -> list[dict]:
    """The run's events of one kind, read back from its events.jsonl."""
    experiment.bus.flush()
    lines = (experiment.run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def gate_events(experiment) -> list[dict]:
    return events(experiment, "gate_refused")


def test_a_nan_seed_is_culled_at_once_and_the_host_never_sees_it(make_config, tmp_path) -> None:
    experiment, trainer, slot = trainer_with_seed(make_config, tmp_path)
    with torch.no_grad():
        next(iter(slot.seed.parameters())).fill_(float("nan"))
    host_before = [p.detach().clone() for p in trainer.model.host_parameters()]
    train = trainer.train_epoch()
    assert slot.state.value == "CULLED"
    assert "non-finite seed gradient (norm nan) at step 1" in slot_reason(experiment)
    host_after = list(trainer.model.host_parameters())
    assert all(torch.isfinite(p).all() for p in host_after)
    assert any(not torch.equal(a, b) for a, b in zip(host_before, host_after)), "training went on"
    assert math.isfinite(train.loss)  # the epoch's loss counts the finite steps only
    assert "seed:blocks.0" not in [g.get("name") for g in trainer.optimizer.param_groups]


def slot_reason(experiment) -> str:
    culls = [e for e in events(experiment, "adaptation") if e["to"] == "CULLED"]
    return culls[-1]["reason"]


def test_blending_waits_for_the_minimum_number_of_steps(make_config, tmp_path) -> None:
    experiment, trainer, slot = trainer_with_seed(
        make_config, tmp_path, "seeds.gates.min_training_steps=25"
    )
    trainer.train_epoch()  # 19 steps an epoch
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    assert slot.state.value == "TRAINING"
    (refused,) = gate_events(experiment)
    assert (refused["gate"], refused["reason"]) == ("min_training_steps", "19 of 25 training steps")
    trainer.train_epoch()
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    assert slot.state.value == "BLENDING"


def test_an_exploding_seed_gradient_culls_instead_of_blending(make_config, tmp_path) -> None:
    experiment, trainer, slot = trainer_with_seed(
        make_config, tmp_path, "seeds.gates.max_grad_norm=1e-9", "seeds.gates.min_training_steps=0"
    )
    trainer.train_epoch()
    trainer.control.apply(Decision(action="advance", slot="blocks.0"))
    assert slot.state.value == "CULLED"
    assert "gate: exploding seed gradient, max norm" in slot_reason(experiment)


def test_fossilizing_needs_a_measured_positive_contribution(make_config, tmp_path) -> None:
    cfg = make_config(
        *ONE_EARLY_SEED,
        *KEEP_IT,
        "seeds.gates.fossilize_min_contribution=2.0",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    final = [a for a in summary["adaptations"] if a["to"] in ("FOSSILIZED", "CULLED")]
    assert [a["to"] for a in final] == ["CULLED"]
    assert final[0]["from"] == "BLENDING"
    assert (
        "gate: val accuracy contribution" in final[0]["reason"] and "<= 2.0" in final[0]["reason"]
    )
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    assert any(json.loads(line)["kind"] == "adaptation" for line in lines)
