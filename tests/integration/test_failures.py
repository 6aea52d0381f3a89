"""A job that fails still writes its summary and ends its W&B run; a sweep goes on past it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from esper.app import build
from esper.events.wandb_file import read_run
from esper.models import MLP
from tests.conftest import run_cli


class FailingHost(MLP):
    """An MLP whose forward raises once training has taken a given number of steps."""

    def __init__(self, *args, fail_after_steps: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fail_after_steps = fail_after_steps
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.steps += 1
            if self.steps > self.fail_after_steps:
                raise RuntimeError("host exploded")
        return super().forward(x)


def test_failed_run_writes_summary_events_and_ends_wandb_run(make_config, tmp_path) -> None:
    cfg = make_config(
        f"model._target_={FailingHost.__module__}.FailingHost",
        "+model.fail_after_steps=40",
        run_dir=tmp_path / "run",
    )
    experiment = build(cfg)
    try:
        experiment.run().model_dump(mode="json")
    except RuntimeError as exc:
        assert "host exploded" in str(exc)
    else:
        raise AssertionError("the run should have failed")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "RuntimeError: host exploded" in summary["error"]
    assert summary["epochs"] == 2  # 19 steps an epoch: the 41st step is in the third epoch
    last = json.loads((tmp_path / "run" / "events.jsonl").read_text().splitlines()[-1])
    assert (last["kind"], last["status"]) == ("run_ended", "failed")
    run = read_run(tmp_path / "run" / "wandb")
    assert run.exit_code == 1
    assert run.summary["status"] == "failed"


@pytest.mark.slow
def test_a_sweep_runs_every_job_when_one_fails(tmp_path: Path) -> None:
    """A job that fails in training (it diverges: no check before it can tell) leaves the
    others to run; a bad value is refused before any job (tests/integration/test_multirun)."""
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "trainer.optimizer.lr=1e30,0.01",
        "trainer.max_nonfinite_steps=2",
        "trainer.max_epochs=2",
        "policy=none",
        "logger=none",
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
    )
    assert result.returncode != 0
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "diverged"
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_failed_job_of_a_sweep_says_its_line_without_a_chained_traceback(tmp_path) -> None:
    """helper-found: a job's one line was followed by the launcher's traceback of the error it
    replaced, then "During handling of the above exception", then the line's own."""
    result = run_cli(
        "-m",
        "policy=none",
        "trainer.optimizer.lr=1e30",
        "trainer.max_nonfinite_steps=2",
        "logger=none",
        "trainer.progress=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
    )
    assert result.returncode != 0
    assert "esper: the host diverged: 2 steps in a row" in result.stderr, result.stderr[-3000:]
    assert "During handling of the above exception" not in result.stderr, result.stderr[-3000:]
