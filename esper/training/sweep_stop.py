"""Ctrl-C (or SIGTERM) on a sweep of the joblib launcher ends every running job as
`interrupted`, with its summary, its checkpoint and one line saying how to resume it; jobs not yet
started are skipped; the sweep exits 128 + the signal.

Why the sweep decides, through a stop file: joblib answers a KeyboardInterrupt in the sweep's
process by killing its loky workers with SIGKILL, so a job winding down after its own Ctrl-C lost
its summary and resume line (one of two did, in a two-job sweep). So:

- The sweep's process blocks SIGINT and SIGTERM before any worker exists (the workers inherit
  the block, so a Ctrl-C while they import torch is held, not a KeyboardInterrupt that breaks
  the pool), and a watcher thread takes them: the first writes `STOP_FILE` (its path reaches
  the workers as `ESPER_SWEEP_STOP`: a sweep directory that names a swept key resolves
  differently in the jobs); a second acts at once, as for a single run.
- A job polls the stop file after its steps (at most every `POLL_S`) and ends as interrupted;
  a job that starts after it returns at once. In a worker the job ignores the signals (a
  terminal's Ctrl-C reaches the whole group, the sweep too) and ends when the sweep's process
  is gone (SIGHUP: a killed sweep leaves no worker training for ever).

Under Hydra's basic sweeper, and under Optuna's as `hparams_search=optuna_growth` selects it
(`hydra/sweeper=esper_optuna`, hydra_plugins/esper_optuna_sweeper): Optuna raised on an
interrupted job's NaN (a traceback, and the sweep's other jobs' lines lost), so its sweeps kept
joblib's own Ctrl-C. There `StopAwareLauncher` has the interrupted trials recorded failed and
launches no trial after the stop (a batch Optuna asked for between the stop and its launch is
recorded failed, never started); an interrupted sweep's optimization_results.yaml holds the best
trial that completed before the stop, and says it was interrupted. Optuna's own `hydra/sweeper=optuna`
keeps joblib's Ctrl-C, and the sweep says so as it starts.
"""

from __future__ import annotations

import _thread
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker as mp_tracker
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import RunMode
from joblib.externals.loky.backend import resource_tracker as loky_tracker
from omegaconf import DictConfig

from esper.training.interruption import SignalInterrupt

STOP_FILE = ".esper_stop"
"""In the sweep directory: the number of the signal that stopped the sweep."""
POLL_S = 0.1
"""How often, at most, a job reads the stop file: a stop waits this long at most, and a small
model's steps do not each pay for a file read."""
SIGNALS = {signal.SIGINT, signal.SIGTERM}
UNSTOPPABLE_OPTUNA = (
    "esper: hydra/sweeper=optuna keeps joblib's own Ctrl-C, which ends the workers at once (a "
    "running trial's summary and resume line can be lost); hydra/sweeper=esper_optuna (the same "
    "options) ends them cleanly"
)
"""Said as a sweep of Optuna's own sweeper on the joblib launcher starts."""
_STOP_ENV = "ESPER_SWEEP_STOP"
"""The stop file's path, inherited by the workers (spawned after the sweep starts)."""
_PARENT_ENV = "ESPER_SWEEP_PARENT"
"""The sweep process's pid: a job in another process runs in a worker."""
_LOCK = threading.Lock()
"""The sweep process's handler and its watcher thread may both take a signal."""


def _joblib(launcher: Any) -> bool:
    return "joblib" in str(launcher.get("_target_", "")).lower()


def stop_requested(stop_file: Path) -> int | None:
    """The signal that stopped the sweep, or None while it runs."""
    try:
        return int(stop_file.read_text().strip() or signal.SIGINT)
    except (OSError, ValueError):
        return None


class StopFilePoll:
    """A job's view of its sweep: the signal once the sweep stopped (the stop file), or SIGHUP
    once the sweep's process is gone; None while it runs, and between reads (at most one each
    `POLL_S`). Its caller (`Interruption`) keeps the first signal it returns."""

    def __init__(self, stop_file: Path, parent: int | None) -> None:
        self.stop_file = stop_file
        self.parent = parent
        self._next = 0.0

    def __call__(self) -> int | None:
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + POLL_S
        signum = stop_requested(self.stop_file)
        if signum is None and self.parent is not None and os.getppid() != self.parent:
            return signal.SIGHUP
        return signum


class SweepStopped(Exception):
    """A trial that the sweep's stop ended or that never started: what `StopAwareLauncher`
    returns for it, as a failed job's exception."""


def sweep_stop_signal() -> int | None:
    """In the sweep's process: the signal its `SweepStop` wrote to the stop file, or None."""
    path = os.environ.get(_STOP_ENV)
    return None if path is None else stop_requested(Path(path))


def sweep_stopped() -> bool:
    """In the sweep's process: whether its `SweepStop` wrote the stop file."""
    return sweep_stop_signal() is not None


class StopAwareLauncher(Launcher):
    """A sweeper's launcher for a sweep that reads its jobs' objectives (Optuna's): once the
    sweep stopped, a job without an objective (interrupted, or skipped before it started)
    returns failed with `SweepStopped`, and it launches nothing more: a batch it is handed
    then (one the sweeper asked between the stop and its next launch) returns failed the same
    way. `on_stop()` runs at the first such return: the sweeper's cue to raise on any failure
    (Optuna's `max_failure_rate` set to 0), so that it records those trials failed and ends
    with `SweepStopped` instead of asking for more. Optuna 2.10 raised on the NaN itself. A
    job that completed before the stop keeps its objective."""

    def __init__(self, launcher: Launcher, on_stop: Callable[[], None]) -> None:
        self.launcher = launcher
        self.on_stop = on_stop
        self.objectives: list[tuple[list[str], float]] = []
        """(overrides, objective) of each job that completed with a finite objective, in
        order: what an interrupted sweep reports as its best so far."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        if sweep_stopped():
            self.on_stop()
            never = "never started: the sweep was stopped"
            return [_Stopped.of(JobReturn(overrides=list(o)), never) for o in job_overrides]
        if _in_process(self.launcher):
            # one at a time, each recorded as it ends: a signal ends this process within the
            # batch (helper-found: the basic launcher ran Optuna's batch of two as one launch,
            # and the trial completed before a Ctrl-C in the second was never recorded)
            returns = []
            for offset, overrides in enumerate(job_overrides):
                (ret,) = self.launcher.launch([overrides], initial_job_idx + offset)
                self._record(overrides, ret)
                returns.append(ret)
        else:
            returns = list(self.launcher.launch(job_overrides, initial_job_idx))
            for overrides, ret in zip(job_overrides, returns, strict=True):
                self._record(overrides, ret)
        if not sweep_stopped():
            return returns
        self.on_stop()
        ended = "interrupted or skipped: the sweep was stopped"
        return [_Stopped.of(ret, ended) if _no_objective(ret) else ret for ret in returns]

    def _record(self, overrides: Sequence[str], ret: JobReturn) -> None:
        value = _objective(ret)
        if value is not None and math.isfinite(value):
            self.objectives.append((list(overrides), value))


def _in_process(launcher: Launcher) -> bool:
    """Whether `launcher` runs its jobs in this process, one after another (Hydra's basic
    launcher), where a signal ends the sweep's process with the job."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    return isinstance(launcher, BasicLauncher)


class _Stopped(JobReturn):
    """A failed job's return that raises its `SweepStopped` without Hydra's `Error executing
    job with overrides: ...` line (printed at each read: two or three lines a trial)."""

    @classmethod
    def of(cls, ret: JobReturn, reason: str) -> _Stopped:
        stopped = SweepStopped(reason)
        return cls(**{**vars(ret), "status": JobStatus.FAILED, "_return_value": stopped})

    @property
    def return_value(self) -> Any:
        raise self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value


def _objective(ret: JobReturn) -> float | None:
    """A completed job's objective (read without raising), or None."""
    value = ret._return_value if ret.status == JobStatus.COMPLETED else None
    return float(value) if isinstance(value, int | float) else None


def _no_objective(ret: JobReturn) -> bool:
    value = _objective(ret)
    return value is not None and math.isnan(value)


def _in_worker() -> bool:
    return os.environ.get(_PARENT_ENV) not in (None, str(os.getpid()))


def job_stop_file(cfg: DictConfig) -> Path | None:
    """The stop file of the joblib sweep this run is a job of (None outside one, or for a
    policy training, which stops as its own Ctrl-C says). In a worker the job ignores SIGINT and
    SIGTERM: the sweep decides, and a Ctrl-C reaches it too."""
    if "simic" in cfg or not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    path = os.environ.get(_STOP_ENV)
    if hydra.mode != RunMode.MULTIRUN or not _joblib(hydra.launcher) or path is None:
        return None
    if _in_worker() and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        # born blocked (see the module's text); ignored now, so the processes the job starts
        # (kernel compile workers, which take SIGTERM) are not born blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return Path(path)


def job_poll(stop_file: Path) -> StopFilePoll:
    """What a job's training asks after its steps (esper.training.interruption)."""
    return StopFilePoll(stop_file, int(os.environ[_PARENT_ENV]) if _in_worker() else None)


class SweepStop(Callback):
    """conf/hydra/default.yaml's callback: the sweep process's side (see the module's text)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stop_file: Path | None = None
        self._previous: dict[int, Any] = {}
        self._ending = False

    def __getstate__(self) -> dict[str, Any]:
        """What a job's copy gets (Hydra sends the callbacks to the workers): nothing of the
        sweep process's signal handling."""
        return {"signum": None, "stop_file": None, "_previous": {}, "_ending": False}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweeper = str(config.hydra.sweeper.get("_target_", ""))
            stoppable = sweeper.endswith(("BasicSweeper", "EsperOptunaSweeper"))
            if "simic" in config or not _joblib(config.hydra.launcher):
                return
            if not stoppable:
                if sweeper.endswith(".OptunaSweeper"):
                    print(UNSTOPPABLE_OPTUNA, file=sys.stderr)
                return
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001 - a config that does not resolve: the jobs say why
            return
        if threading.current_thread() is not threading.main_thread():
            return
        taken = [s for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
        if not taken:
            return  # started under nohup and the like: the signals stay ignored
        self.stop_file = sweep_dir.absolute() / STOP_FILE
        if self.stop_file.is_file():
            self.stop_file.unlink()  # an earlier, stopped sweep's (overwrite=true)
        os.environ[_STOP_ENV] = str(self.stop_file)
        os.environ[_PARENT_ENV] = str(os.getpid())
        # A thread that existed before (a library's) may still take a signal: then Python runs
        # this handler in the main thread; otherwise the watcher takes it from the block.
        for signum in taken:
            self._previous[signum] = signal.signal(signum, self._handle)
        # The resource trackers unblock both signals in the thread that starts them: started
        # now, before the block, they are not started again.
        mp_tracker.ensure_running()
        loky_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, taken)
        threading.Thread(target=self._watch, args=(set(taken),), daemon=True).start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """In the main thread: a signal, or the watcher's second one passed on."""
        if not self._first(signum):
            raise SignalInterrupt(signum)  # the sweep ends at once (joblib ends its workers)

    def _watch(self, signals: set[int]) -> None:
        while True:
            signum = signal.sigwait(signals)
            if not self._first(signum):
                _thread.interrupt_main(signal.Signals(signum))  # runs _handle there

    def _first(self, signum: int) -> bool:
        """Whether this is the sweep's first signal (then the stop is written and said)."""
        with _LOCK:
            if self._ending:
                return True  # the sweep is ending anyway: nothing more to do
            first, self.signum = self.signum is None, self.signum or signum
        if not first:
            return False
        try:
            assert self.stop_file is not None
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.write_text(str(signum))
        except OSError as exc:
            print(f"esper: the sweep's stop file cannot be written ({exc})", file=sys.stderr)
            return False
        print(
            f"esper: {signal.Signals(signum).name}: the sweep stops; running jobs end after their "
            "step, jobs not started are skipped (a second signal stops at once)",
            file=sys.stderr,
        )
        return True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(_STOP_ENV, None)
        os.environ.pop(_PARENT_ENV, None)
        with _LOCK:
            self._ending = True
            signum = self.signum
        if signum is not None:  # the signals stay taken and held until the process ends
            print(
                f"esper: the sweep was interrupted by {signal.Signals(signum).name}; each job it "
                "interrupted said above where it stopped, a job it skipped has no summary.json",
                file=sys.stderr,
            )
            raise SystemExit(128 + signum)
        if self._previous:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, set(self._previous))
            for taken, handler in self._previous.items():
                signal.signal(taken, handler)
            self._previous.clear()
