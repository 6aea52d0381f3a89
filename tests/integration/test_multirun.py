"""Sweeps through Hydra's basic launcher and the joblib launcher: one W&B run per job, grouped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.events.wandb_file import read_run
from esper.training.sweep_stop import STOP_FILE
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # `python run.py` in subprocesses


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_two_job_multirun(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "policy=none,heuristic",
        "trainer.max_epochs=12",
        "trainer.progress=false",
        f"hydra.sweep.dir={sweep}",
    ]
    if launcher == "joblib":
        args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = run_cli(*args, cwd=tmp_path, env={"ESPER_KERNEL_STORE": str(tmp_path / "k")})
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["choices"]["policy"] for s in summaries] == ["none", "heuristic"]
    assert all(s["status"] == "completed" for s in summaries)
    runs = [read_run(sweep / str(i) / "wandb") for i in (0, 1)]
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].group == runs[1].group == sweep.name
    assert [r.exit_code for r in runs] == [0, 0]
    assert (sweep / "multirun.yaml").exists()
    assert not (sweep / STOP_FILE).exists(), "a sweep not interrupted leaves no stop file"


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_job_refused_says_its_line_without_a_traceback(tmp_path: Path, launcher) -> None:
    """helper-found: a bad value in a sweep printed the job's line, then Hydra's `Error
    executing job with overrides` and a traceback ending in `esper.config.ConfigError`."""
    sweep = tmp_path / "sweep"
    args = ["-m", "trainer.max_epochs=-3", "seed=0,1", "logger=none", f"hydra.sweep.dir={sweep}"]
    if launcher == "joblib":
        args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    result = run_cli(*args, cwd=tmp_path, env={"ESPER_KERNEL_STORE": str(tmp_path / "k")})
    assert result.returncode == 1
    said = "esper: invalid configuration:\n  trainer.max_epochs=-3: Input should be greater"
    assert result.stderr.count(said) == 3, result.stderr[-3000:]  # each job's, and Hydra's
    assert "Traceback" not in result.stderr and "ConfigError" not in result.stderr
    assert not list(sweep.glob("*/summary.json")), "nothing was trained"
