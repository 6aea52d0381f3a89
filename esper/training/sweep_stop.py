"""Ctrl-C (or SIGTERM) on a sweep of the joblib launcher ends every running job as
`interrupted`, with its summary, its checkpoint and one line saying how to resume it; jobs not yet
started are skipped; the sweep exits 128 + the signal.

Why a stop file rather than signals: joblib answers a KeyboardInterrupt in the sweep's process by
killing its loky workers with SIGKILL, so a job winding down after its own Ctrl-C lost its
summary and resume line (one of two did, in a two-job sweep). So the sweep's process decides:
its first SIGINT/SIGTERM writes `STOP_FILE` into the sweep directory and the sweep waits for its
jobs; each job's training polls that file after its steps (at most every `POLL_S`) and ends as
interrupted, and a job that starts after it returns at once. In a worker the jobs ignore the
signals themselves (a Ctrl-C reaches the whole process group; a worker's second signal would
kill it mid-summary). A second signal to the sweep acts at once, as for a single run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

STOP_FILE = ".esper_stop"
"""In the sweep directory: the number of the signal that stopped the sweep."""
POLL_S = 0.1
"""How often, at most, a job reads the stop file: a stop waits this long at most, and a small
model's steps do not each pay for a file read."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PARENT = "ESPER_SWEEP_PARENT"
"""The sweep process's pid, inherited by its workers (spawned after the sweep starts)."""


def _joblib(launcher: Any) -> bool:
    return "joblib" in str(launcher.get("_target_", "")).lower()


def stop_requested(stop_file: Path) -> int | None:
    """The signal that stopped the sweep, or None while it runs."""
    try:
        return int(stop_file.read_text().strip() or signal.SIGINT)
    except (OSError, ValueError):
        return None


class StopFilePoll:
    """A job's view of its sweep's stop file: `signum` is the signal once the sweep stopped."""

    def __init__(self, stop_file: Path) -> None:
        self.stop_file = stop_file
        self._next = 0.0
        self._signum: int | None = None

    def __call__(self) -> int | None:
        now = time.monotonic()
        if self._signum is None and now >= self._next:
            self._next = now + POLL_S
            self._signum = stop_requested(self.stop_file)
        return self._signum


def job_stop_file(cfg: DictConfig) -> Path | None:
    """The stop file of the joblib sweep this run is a job of (None outside one, or for a
    policy training, which stops as its own Ctrl-C says). In a worker process the job leaves
    SIGINT and SIGTERM to the sweep: they are ignored here from now on."""
    if "simic" in cfg or not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or not _joblib(hydra.launcher):
        return None
    in_worker = os.environ.get(_PARENT) not in (None, str(os.getpid()))
    if in_worker and threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    return Path(str(hydra.sweep.dir)) / STOP_FILE


class SweepStop(Callback):
    """conf/hydra/default.yaml's callback: the sweep process's side (see the module's text)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stop_file: Path | None = None
        self._previous: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if "simic" in config or not _joblib(config.hydra.launcher):
                return
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001 - a config that does not resolve: the jobs say why
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self.stop_file = sweep_dir / STOP_FILE
        self.stop_file.unlink(missing_ok=True)  # an earlier, stopped sweep's (overwrite=true)
        os.environ[_PARENT] = str(os.getpid())
        for signum in SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self._restore()  # a second signal acts at once
        assert self.stop_file is not None
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.write_text(str(signum))
        print(
            f"esper: {signal.Signals(signum).name}: the sweep stops; running jobs end after their "
            "step, jobs not started are skipped (a second signal stops at once)",
            file=sys.stderr,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._restore()
        os.environ.pop(_PARENT, None)
        if self.signum is not None:
            print(
                f"esper: the sweep was interrupted by {signal.Signals(self.signum).name}; each "
                "job it interrupted said above how to resume it",
                file=sys.stderr,
            )
            raise SystemExit(128 + self.signum)
