"""Ctrl-C on a sweep of the joblib launcher loses no job: every running job ends `interrupted`
with its summary and a line naming its directory, jobs not started are skipped, the sweep exits
130 with no traceback and no worker left. Before, joblib answered the sweep's KeyboardInterrupt
by killing its workers with SIGKILL, and a job still winding down lost its summary and resume
line (esper.training.sweep_stop)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from esper.training.sweep_stop import STOP_FILE, UNSTOPPABLE_OPTUNA
from tests.faults.test_signals import (
    alive,
    epochs_ended,
    group_killed_if_left,
    run_py,
    signal_and_wait,
)

pytestmark = pytest.mark.slow  # `python run.py -m` in a subprocess, two loky workers


def joblib_sweep(sweep: Path, *overrides: str) -> list[str]:
    """`run.py -m` arguments: a quiet sweep into `sweep` on two loky workers."""
    quiet = ("logger=none", "trainer.progress=false", "trainer.quiet=true")
    launcher = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    return ["-m", *overrides, *quiet, f"hydra.sweep.dir={sweep}", *launcher]


def kernels(tmp_path: Path) -> dict[str, str]:
    return {"ESPER_KERNEL_STORE": str(tmp_path / "kernels")}


def loky_workers(process: subprocess.Popen[str]) -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process(process.pid).children()
        if "loky" in " ".join(child.cmdline()) and "resource_tracker" not in child.cmdline()[-1]
    ]


def wait_for(ready: Callable[[], bool], process: subprocess.Popen[str] | None) -> None:
    """Until `ready()`, while `process` runs (at most three minutes)."""
    deadline = time.monotonic() + 180
    while not ready():
        running = process is None or process.poll() is None
        assert running and time.monotonic() < deadline, "never ready"
        time.sleep(0.05)


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
    scheduler's SIGTERM to the sweep's process alone (the workers learn of it from the sweep),
    with a sweep directory that names the swept key: each job's resolves elsewhere than the
    sweep's own (that sweep waited for ever: its jobs looked for the stop in their own)."""
    if to_group:
        sweep, swept = tmp_path / "sweep", "seed=0,1,2,3"
        job_dirs = [sweep / job for job in "0123"]
    else:
        sweep, swept = tmp_path / "sweep_${name}", "name=a,b,c,d"
        job_dirs = [tmp_path / f"sweep_{name}" / str(job) for job, name in enumerate("abcd")]
    args = joblib_sweep(sweep, swept, "policy=random", "trainer.max_epochs=100000")
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path), new_session=True)) as process:
        wait_for(lambda: min(epochs_ended(job) for job in job_dirs[:2]) >= 3, process)
        workers = loky_workers(process)
        assert len(workers) == 2
        stderr = signal_and_wait(process, signum, to_group)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-3000:]
    for job in job_dirs[:2]:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and name in summary["error"]
        assert 3 <= summary["epochs"] < 100000
        assert (job / "checkpoints" / "last.pt").exists()
        assert f"esper: {job}: interrupted by {name} during epoch" in stderr
    for job in job_dirs[2:]:
        assert not (job / "summary.json").exists(), "a job not started is skipped"
    stop_file = (sweep if to_group else tmp_path / "sweep_esper") / STOP_FILE
    assert stop_file.read_text() == str(signum)
    assert stderr.strip().splitlines()[-1] == CLOSING.format(name)
    assert not any(alive(worker) for worker in workers)


CLOSING = (
    "esper: the sweep was interrupted by {}; each job it interrupted said above where it "
    "stopped, a job it skipped has no summary.json"
)


def test_ctrl_c_ends_an_optuna_sweep_as_it_ends_a_joblib_sweep(tmp_path: Path) -> None:
    """`hparams_search=optuna_growth` on two loky workers, six trials: Ctrl-C while the first
    two run. Before, the sweep kept joblib's own Ctrl-C (its workers killed, a job's summary
    and resume line lost); with the stop file alone, Optuna 2.10 raised on the interrupted
    trials' NaN. Now the two running trials end interrupted with their lines and are recorded
    failed in the study (a persisted one: `storage=sqlite:///...` raised on SQLAlchemy 2
    before the optuna extra pinned it), and no trial is asked for after the stop, even where
    failures are tolerated (helper-found: at `max_failure_rate=1.0` the sweep asked for every
    remaining trial, each recorded failed), without Hydra's `Error executing job` lines."""
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    args = joblib_sweep(
        sweep,
        "hparams_search=optuna_growth",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.max_failure_rate=1.0",
        f"hydra.sweeper.storage={storage}",
        "trainer.max_epochs=100000",
    )
    job_dirs = [sweep / job for job in "012"]
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path), new_session=True)) as process:
        wait_for(lambda: min(epochs_ended(job) for job in job_dirs[:2]) >= 3, process)
        workers = loky_workers(process)
        stderr = signal_and_wait(process, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "Error executing job" not in stderr, stderr[-3000:]
    assert UNSTOPPABLE_OPTUNA not in stderr
    for job in job_dirs[:2]:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and 3 <= summary["epochs"] < 100000
        assert (job / "checkpoints" / "last.pt").exists()
        assert f"esper: {job}: interrupted by SIGINT during epoch" in stderr
    assert not job_dirs[2].exists(), "no job after the stop"
    assert stderr.strip().splitlines()[-1] == CLOSING.format("SIGINT")
    assert not any(alive(worker) for worker in workers)
    study = optuna.load_study(study_name="esper_growth", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"], "none asked after the stop"


def stopped_seeded_optuna_sweep(
    tmp_path: Path, ready: Callable[[Path], bool], *overrides: str
) -> Path:
    """A four-trial `esper_optuna` sweep with sampler seed 0 on two loky workers, stopped by
    Ctrl-C once `ready(sweep_dir)`; it ended as a stop does. Returns the sweep directory."""
    pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    sweep = tmp_path / "sweep"
    args = joblib_sweep(
        sweep,
        "hydra/sweeper=esper_optuna",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        "policy=none",
        *overrides,
    )
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path), new_session=True)) as process:
        wait_for(lambda: ready(sweep), process)
        stderr = signal_and_wait(process, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == CLOSING.format("SIGINT")
    return sweep


def test_a_stop_in_a_batch_with_a_trial_failed_on_its_own_ends_as_a_stop(
    tmp_path: Path,
) -> None:
    """helper-found: a batch holding an interrupted trial and one that failed for its own
    reason (diverged) ended in a traceback and exit 1 when Optuna raised the failed one first
    (the stop sets the failure rate to 0). Now it ends as any stop does; the diverged trial
    keeps its own summary."""

    def ready(sweep: Path) -> bool:  # trial 0 diverged, trial 1 runs
        return (sweep / "0" / "summary.json").exists() and epochs_ended(sweep / "1") >= 3

    sweep = stopped_seeded_optuna_sweep(
        tmp_path,
        ready,
        "hydra.sweeper.max_failure_rate=1.0",
        "trainer.optimizer.lr=choice(0.01,1e30)",  # with seed 0: trial 0 diverges
        "trainer.max_epochs=100000",
    )
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "diverged"
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "interrupted"
    assert not (sweep / "optimization_results.yaml").exists(), "no trial completed"


@pytest.mark.parametrize("stored", [False, True], ids=["in-memory", "with-a-storage"])
def test_an_interrupted_optuna_sweep_writes_its_best_trial_so_far(
    tmp_path: Path, stored: bool
) -> None:
    """Stop 31's item: a stopped sweep wrote no optimization_results.yaml, so its best trial
    so far was only to be found by reading every trial's summary. With sampler seed 0 trial 0
    asks for 100,000 epochs and trial 1 for 2: trial 1 completes, the stop ends trial 0. A
    study with a storage is reported as Optuna reports it, over all its sweeps (helper-found:
    this sweep's best alone): here an earlier sweep's better trial."""
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    if stored:
        earlier = optuna.create_study(study_name="s", storage=storage, direction="maximize")
        choices = optuna.distributions.CategoricalDistribution([2, 100000])
        earlier.add_trial(
            optuna.trial.create_trial(
                params={"trainer.max_epochs": 100000},
                distributions={"trainer.max_epochs": choices},
                value=0.99,
            )
        )

    def ready(sweep: Path) -> bool:
        return (sweep / "1" / "summary.json").exists() and epochs_ended(sweep / "0") >= 3

    sweep = stopped_seeded_optuna_sweep(
        tmp_path,
        ready,
        "trainer.max_epochs=choice(2,100000)",
        "debug=fast",
        "hydra.sweeper.study_name=s",
        *([f"hydra.sweeper.storage={storage}"] if stored else []),
    )
    assert json.loads((sweep / "1" / "summary.json").read_text())["status"] == "completed"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    if stored:
        assert results["best_params"] == {"trainer.max_epochs": 100000}
        assert results["best_value"] == 0.99 and results["trials_completed"] == 2
    else:
        assert results["best_params"] == {"trainer.max_epochs": 2}, "the search space only"
        assert 0 < results["best_value"] <= 1 and results["trials_completed"] == 1
    assert results["interrupted_by"] == "SIGINT"


def test_optunas_own_sweeper_on_joblib_says_it_keeps_joblibs_ctrl_c(tmp_path: Path) -> None:
    """helper-found: `hydra/sweeper=optuna` (not the preset's `esper_optuna`) kept joblib's own
    Ctrl-C, which loses a running trial's summary, without a word. It is said as it starts."""
    pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    one_trial = ("hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "trainer.max_epochs=1")
    one_trial = (*one_trial, "hydra.sweeper.direction=maximize")
    args = joblib_sweep(tmp_path / "sweep", "hydra/sweeper=optuna", "policy=none", *one_trial)
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path))) as process:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert UNSTOPPABLE_OPTUNA in stderr


def test_ctrl_c_while_the_workers_start_breaks_nothing(tmp_path: Path) -> None:
    """A Ctrl-C as the workers import torch: they start with the signals blocked (the sweep
    blocks them before they exist), so it is held, not a KeyboardInterrupt that broke the pool
    (a traceback, BrokenProcessPool, exit 1). Every job then ends interrupted or is skipped."""
    sweep = tmp_path / "sweep"
    args = joblib_sweep(sweep, "seed=0,1,2,3", "trainer.max_epochs=100000")
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path), new_session=True)) as process:
        wait_for(lambda: len(loky_workers(process)) == 2, process)
        workers = loky_workers(process)
        stderr = signal_and_wait(process)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-3000:]
    for summary in sweep.glob("*/summary.json"):
        assert json.loads(summary.read_text())["status"] == "interrupted"
    assert stderr.strip().splitlines()[-1] == CLOSING.format("SIGINT")
    assert not any(alive(worker) for worker in workers)


def test_a_killed_sweep_leaves_no_job_training(tmp_path: Path) -> None:
    """SIGKILL of the sweep's process (nothing can be caught there): its jobs see it gone, end
    interrupted (SIGHUP) with their summaries and checkpoints, and their workers exit. Before,
    the workers trained on for ever, deaf to SIGINT and SIGTERM."""
    sweep = tmp_path / "sweep"
    args = joblib_sweep(sweep, "seed=0,1", "trainer.max_epochs=100000")
    process = run_py(*args, env=kernels(tmp_path), new_session=True)
    try:
        wait_for(lambda: min(epochs_ended(sweep / job) for job in "01") >= 3, process)
        workers = loky_workers(process)
        process.kill()
        process.communicate(timeout=60)
        wait_for(lambda: not any(alive(worker) for worker in workers), process=None)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone with its workers
            os.killpg(process.pid, signal.SIGKILL)
    for job in "01":
        summary = json.loads((sweep / job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "SIGHUP" in summary["error"]
        assert (sweep / job / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("stored", [False, True], ids=["in-memory", "with-a-storage"])
def test_ctrl_c_on_an_optuna_sweep_of_the_basic_launcher_keeps_the_best_trial(
    tmp_path: Path, stored: bool
) -> None:
    """The preset's default launcher runs each trial in the sweep's own process: Ctrl-C ends
    the trial running as it ends a single run, and the sweep with it. helper-found: the best
    trial completed before it was in the log lines alone (no optimization_results.yaml). In a
    stored study the batch's trials were left RUNNING, the completed one's value lost: now it
    is told its value and the interrupted one failed."""
    optuna = pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [
        "-m",
        "hparams_search=optuna_growth",
        "hydra.sweeper.n_trials=20",
        "trainer.max_epochs=60",
        "logger=none",
        "trainer.progress=false",
        "trainer.quiet=true",
        f"hydra.sweep.dir={sweep}",
        *([f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s"] if stored else []),
    ]
    with group_killed_if_left(run_py(*args, env=kernels(tmp_path), new_session=True)) as process:
        wait_for(lambda: epochs_ended(sweep / "1") >= 2, process)  # in trial 1
        stderr = signal_and_wait(process, signal.SIGINT)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"esper: {sweep / '1'}: interrupted by SIGINT during epoch" in stderr
    finished = [
        json.loads(path.read_text())
        for path in sweep.glob("*/summary.json")
        if json.loads(path.read_text())["status"] == "completed"
    ]
    assert (sweep / "optimization_results.yaml").exists(), stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["interrupted_by"] == "SIGINT"
    assert results["trials_completed"] == len(finished) >= 1
    at_cost = [s["metrics"]["val_accuracy"] - 0.05 * s["params"]["seeds"] / 1000 for s in finished]
    assert results["best_value"] == pytest.approx(max(at_cost))
    assert set(results["best_params"]) == {
        "policy.patience",
        "policy.warmup_epochs",
        "policy.min_delta",
    }
    if stored:
        trials = optuna.load_study(study_name="s", storage=storage).trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * len(finished) + ["FAIL"]
        assert max(t.value for t in trials[:-1]) == pytest.approx(results["best_value"])
