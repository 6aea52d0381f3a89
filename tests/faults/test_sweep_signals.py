"""Ctrl-C on a sweep of the joblib launcher loses no job: every running job ends `interrupted`
with its summary and a line naming its directory, jobs not started are skipped, the sweep exits
130 with no traceback and no worker left. Before, joblib answered the sweep's KeyboardInterrupt
by killing its workers with SIGKILL, and a job still winding down lost its summary and resume
line (esper.training.sweep_stop)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from esper.training.sweep_stop import STOP_FILE
from tests.conftest import run_cli
from tests.faults.test_signals import alive, epochs_ended, run_py

pytestmark = pytest.mark.slow  # `python run.py -m` in a subprocess, two loky workers


def joblib_sweep(sweep: Path, *overrides: str) -> list[str]:
    """`run.py -m` arguments: a quiet sweep into `sweep` on two loky workers."""
    quiet = ("logger=none", "trainer.progress=false", "trainer.quiet=true")
    launcher = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    return ["-m", *overrides, *quiet, f"hydra.sweep.dir={sweep}", *launcher]


def kernels(tmp_path: Path) -> dict[str, str]:
    return {"ESPER_KERNEL_STORE": str(tmp_path / "kernels")}


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-the-group", "kill-term-the-sweep-alone"],
)
def test_a_signal_ends_every_running_job_of_a_joblib_sweep_with_its_summary(
    tmp_path: Path, signum: int, to_group: bool
) -> None:
    """Four jobs on two workers: jobs 0 and 1 run when the signal comes, 2 and 3 have not
    started. The group form is a terminal's Ctrl-C (every worker gets it too); the other a
    scheduler's SIGTERM to the sweep's process alone (the workers learn of it from the sweep)."""
    sweep = tmp_path / "sweep"
    args = joblib_sweep(sweep, "seed=0,1,2,3", "policy=random", "trainer.max_epochs=100000")
    process = run_py(*args, env=kernels(tmp_path), new_session=True)
    try:
        deadline = time.monotonic() + 180
        while min(epochs_ended(sweep / job) for job in "01") < 3:
            assert process.poll() is None and time.monotonic() < deadline, "jobs never trained"
            time.sleep(0.05)
        workers = [
            child
            for child in psutil.Process(process.pid).children()
            if "loky" in " ".join(child.cmdline()) and "resource_tracker" not in child.cmdline()[-1]
        ]
        assert len(workers) == 2
        if to_group:
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-3000:]
    for job in "01":
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and name in summary["error"]
        assert 3 <= summary["epochs"] < 100000
        assert (sweep / job / "checkpoints" / "last.pt").exists()
        assert f"esper: {sweep / job}: interrupted by {name} during epoch" in stderr
    for job in "23":
        assert not (sweep / job / "summary.json").exists(), "a job not started is skipped"
    assert (sweep / STOP_FILE).read_text() == str(signum)
    assert stderr.strip().splitlines()[-1] == (
        f"esper: the sweep was interrupted by {name}; each job it interrupted said above how "
        "to resume it"
    )
    assert not any(alive(worker) for worker in workers)


def test_a_sweep_not_interrupted_leaves_no_stop_file(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = joblib_sweep(sweep, "seed=0,1", "trainer.max_epochs=2")
    result = run_cli(*args, cwd=tmp_path, env=kernels(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (sweep / STOP_FILE).exists()
    statuses = [json.loads((sweep / j / "summary.json").read_text())["status"] for j in "01"]
    assert statuses == ["completed", "completed"]
