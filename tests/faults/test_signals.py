"""SIGINT and SIGTERM lose nothing: the current step finishes, the run ends `interrupted` with
events.jsonl's run_ended, summary.json, the last whole epoch's checkpoint and a finished W&B
run; run.py exits 128 + the signal without a traceback, and a resume ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from esper.app import build
from esper.events.wandb_file import read_run
from esper.training import checkpoint
from tests.conftest import ROOT, own_env

EARLY = ("policy.patience=1", "policy.warmup_epochs=2", "policy.min_delta=1.0")


def epochs_ended(run_dir: Path) -> int:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return 0
    return sum('"kind": "epoch_ended"' in line for line in path.read_text().splitlines())


def signal_after(run_dir: Path, epochs: int, pid: int, signum: int) -> threading.Thread:
    """Send `signum` to `pid` once the run in `run_dir` has ended `epochs` epochs."""

    def wait_and_send() -> None:
        deadline = time.monotonic() + 120
        while epochs_ended(run_dir) < epochs and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(pid, signum)

    thread = threading.Thread(target=wait_and_send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_as_interrupted_with_everything_written(
    make_config, tmp_path, signum
) -> None:
    run_dir = tmp_path / "run"
    experiment = build(make_config(*EARLY, "trainer.max_epochs=2000", run_dir=run_dir))
    sender = signal_after(run_dir, 4, os.getpid(), signum)
    record = experiment.run()
    sender.join()
    assert record.status == "interrupted" and experiment.interrupted_by == signum
    assert signal.Signals(signum).name in (record.error or "")
    assert 4 <= record.epochs < 2000
    assert "test_loss" not in record.metrics, "an interrupted run never reads test"
    _, state = checkpoint.load(str(run_dir))
    assert state["epoch"] == record.epochs - 1, "the checkpoint holds the last whole epoch"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
    assert events[-1]["kind"] == "run_ended" and events[-1]["status"] == "interrupted"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"] == record.epochs
    assert read_run(run_dir / "wandb").exit_code == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers restored"


def run_py(*args: str, env: dict[str, str], new_session: bool = False) -> subprocess.Popen[str]:
    """`python run.py ARGS`, running; `new_session`: in its own process group, as a terminal's
    foreground job is (a Ctrl-C reaches the whole group)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        env=own_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def signal_and_wait(
    process: subprocess.Popen[str], signum: int = signal.SIGINT, to_group: bool = True
) -> str:
    """Send `signum` to the process's group (as a terminal's Ctrl-C does) or to it alone; its
    stderr once it has ended."""
    (os.killpg if to_group else os.kill)(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    return stderr


@contextlib.contextmanager
def group_killed_if_left(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The process, and a SIGKILL to its group if a failed test leaves it running."""
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_once_the_run_is_recorded_leaves_the_exit_code_as_recorded(
    tmp_path, signum
) -> None:
    """helper-found: a signal in the second or so W&B's shutdown takes after the result
    table exited 143 or 130 (`esper: interrupted`; SIGTERM also a traceback from W&B's exit
    hook) for a run that every file records as completed."""
    run_dir = tmp_path / "run"
    process = run_py(
        "trainer.max_epochs=3",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
        env={"ESPER_KERNEL_STORE": str(tmp_path / "kernels")},
    )
    sent = False
    with group_killed_if_left(process):
        assert process.stdout is not None
        for line in process.stdout:  # the console's log lines: the result table, then this
            if " outputs: " in line:
                process.send_signal(signum)
                sent = True
                break
        _, rest = process.communicate(timeout=120)
    assert sent, "the run's last line was seen, and the signal sent after it"
    assert process.returncode == 0, rest
    assert "interrupted" not in rest and "Traceback" not in rest, rest
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert read_run(run_dir / "wandb").exit_code == 0


@pytest.mark.slow
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(make_config, tmp_path) -> None:
    common = (*EARLY, "trainer.max_epochs=60", "logger=none", "trainer.progress=false")
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "kernels")}
    first = tmp_path / "first"
    process = run_py(*common, f"hydra.run.dir={first}", env=env)
    signal_after(first, 6, process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "esper: interrupted by SIGTERM" in stderr
    stopped = json.loads((first / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["epochs"] < 60

    resumed = run_py(
        *common, f"hydra.run.dir={tmp_path / 'second'}", f"trainer.resume={first}", env=env
    )
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-2000:]
    got = json.loads((tmp_path / "second" / "summary.json").read_text())
    full = build(make_config(*common, run_dir=tmp_path / "full")).run().model_dump(mode="json")
    assert got["status"] == "completed" and got["epochs"] == 60
    for key in ("metrics", "adaptations", "params", "final_slots"):
        assert got[key] == full[key], key


@pytest.mark.slow
def test_ctrl_c_while_the_compile_worker_starts_gives_one_line(tmp_path) -> None:
    """Ctrl-C to the run's group while its compile worker is still importing torch (the
    worker starts at the first germination when there is no preflight compile). Before, the
    worker died of it with a KeyboardInterrupt traceback beside the run's own line."""
    args = (*EARLY, "policy.warmup_epochs=0", "kernels.preflight=false", "logger=none")
    args += ("trainer.max_epochs=2000", "trainer.progress=false")
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "kernels")}
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    with group_killed_if_left(run_py(*args, run_dir, env=env, new_session=True)) as process:
        deadline = time.monotonic() + 120
        while not spawned_workers(process.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        [worker] = spawned_workers(process.pid)
        time.sleep(0.3)  # inside its imports (a second or more)
        stderr = signal_and_wait(process)
    assert process.returncode == 130, stderr[-3000:]
    assert "esper: interrupted by SIGINT" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert not alive(worker)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_python_imports_gives_one_line(tmp_path, signum: int) -> None:
    """In the seconds run.py imports torch and Esper, before its own handlers: SIGTERM's
    default action ended the process without a word, Ctrl-C printed an import's traceback.
    The signal is sent once run.py catches SIGTERM (its process status says so), which is
    long before the imports end."""
    process = run_py("logger=none", f"hydra.run.dir={tmp_path / 'run'}", env={})
    with group_killed_if_left(process):
        deadline = time.monotonic() + 60
        while not catches_sigterm(process.pid) and time.monotonic() < deadline:
            time.sleep(0.001)
        stderr = signal_and_wait(process, signum, to_group=False)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert stderr == f"esper: interrupted by {name} while starting; nothing was written\n"
    assert not (tmp_path / "run").exists()


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (its SigCgt mask, /proc/PID/status)."""
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.slow
def test_sigterm_during_start_up_gives_one_line_and_exit_143(tmp_path) -> None:
    """SIGTERM once the job has started (its run.log exists) but before training: composing,
    building, the preflight's compiles on a cold kernel store (seconds). Before, its default
    action killed the process without a word (exit -15), as it does Simic's start-up."""
    env = {"ESPER_KERNEL_STORE": str(tmp_path / "kernels")}
    run_dir = tmp_path / "run"
    with group_killed_if_left(
        run_py("logger=none", f"hydra.run.dir={run_dir}", env=env)
    ) as process:
        deadline = time.monotonic() + 120
        while not (run_dir / "run.log").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        stderr = signal_and_wait(process, signal.SIGTERM, to_group=False)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "esper: interrupted"
    assert "Traceback" not in stderr


def spawned_workers(pid: int) -> list[psutil.Process]:
    """The process's multiprocessing workers (not its resource tracker)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


TINY_POLICY_TRAINING = (
    "--config-name",
    "train_policy",
    "logger=none",
    "simic.tasks=[{name: spirals, overrides: ['dataset=spirals', 'model=mlp', 'blueprints=vector']}]",
    "simic.train_seeds=[100,101]",
    "simic.episodes_per_update=2",
    "simic.group_size=2",
    "simic.workers=2",
)
IDLE_WORKERS = (  # short teacher episodes, then a long imitation: the workers wait, idle
    "simic.episode_epochs=6",
    "simic.imitate.episodes=2",
    'simic.imitate.teacher=["policy=heuristic","policy.patience=1","policy.warmup_epochs=2",'
    '"policy.min_delta=1.0"]',
    "simic.imitate.epochs=100000",
)
BUSY_WORKERS = ("simic.episode_epochs=3000",)  # episodes of minutes: a stop must not wait


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "extra", "to_group"),
    [("imitation:", IDLE_WORKERS, True), ("updates", BUSY_WORKERS, False)],
    ids=["ctrl-c-idle-workers", "kill-busy-workers"],
)
def test_sigint_stops_policy_training_and_its_workers_at_once(
    tmp_path, phase, extra, to_group
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) while the workers wait for imitation
    to end, and `kill -INT` of the training process alone during PPO's episodes: one line,
    exit 130, and every worker gone. Before: an idle worker died of the Ctrl-C with a
    KeyboardInterrupt traceback, and a SIGINT to the parent alone waited for the update's
    episodes to run to their end."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "run.py"),
            *TINY_POLICY_TRAINING,
            *extra,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        env=own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )
    with group_killed_if_left(process):
        assert process.stderr is not None
        seen = ""
        while phase not in seen:  # the progress bar of the phase: its episodes are running
            chunk = process.stderr.read(1)
            assert chunk, f"ended before {phase!r}: {seen[-2000:]}"
            seen += chunk
        time.sleep(2)
        workers = spawned_workers(process.pid)
        assert len(workers) == 2, "the episodes run in two worker processes"
        stderr = seen + signal_and_wait(process, signal.SIGINT, to_group)
    said = "\n".join(ln for ln in re.split(r"[\r\n]", stderr) if ln and "%|" not in ln)
    assert process.returncode == 130, said[-3000:]
    assert "esper: interrupted" in stderr
    warned = [ln for ln in (tmp_path / "run" / "run.log").read_text().splitlines() if "WARN" in ln]
    assert "Traceback" not in stderr and "leaked" not in stderr, [said[-3000:], *warned]
    assert not any(alive(worker) for worker in workers)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
