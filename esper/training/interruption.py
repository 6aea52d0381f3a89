"""SIGINT and SIGTERM end a run cleanly: the current step finishes, then the run ends as
`interrupted` with everything written (events, summary, the last whole epoch's checkpoint).

A second signal is not caught: it acts at once (the handlers from before are back after the
first: Ctrl-C's KeyboardInterrupt, and for SIGTERM `sigterm_unwinds`'s).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by the loop after the step during which a signal arrived."""

    def __init__(self, signum: int, epoch: int, step: int, checkpointed: bool) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        go_on = (
            "epochs before it are in the checkpoint, which trainer.resume continues"
            if checkpointed
            else "no checkpoint was written (trainer.checkpoint=false, or before the first "
            "epoch ended): nothing to resume"
        )
        super().__init__(f"interrupted by {name} during epoch {epoch} (step {step}); {go_on}")


class SignalInterrupt(KeyboardInterrupt):
    """A signal that unwinds as Ctrl-C does, so run.py says one line and exits 128 + `signum`:
    SIGTERM outside a run's training loop (`sigterm_unwinds`), during a policy training
    (esper.simic.train: a scheduler's preemption), or a stopping sweep's second signal
    (esper.training.sweep_stop)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """A signal handler: `signum` unwinds as Ctrl-C does (a `SignalInterrupt`)."""
    raise SignalInterrupt(signum)


def sigterm_unwinds(replacing: Callable[[int, FrameType | None], Any] | None = None) -> None:
    """SIGTERM as Ctrl-C, outside the training loop (start-up: composing, preflight compiles
    of seconds; a second one): the process said nothing and wrote nothing under SIGTERM's
    default action. Only where SIGTERM has that action or `replacing` (run.py's handler while
    it imports), not a sweep's worker, which ignores it; and from the main thread.
    Interruption puts it back after the loop's first signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, replacing):
        signal.signal(signal.SIGTERM, raise_interrupt)


received: int | None = None
"""The first signal any `Interruption` of this process took: a worker process that was told to
stop (esper.kernels.worker) takes no further task once its run has stopped."""


class Interruption:
    """A context that turns the first SIGINT/SIGTERM into a flag the loop polls after each step.

    Handlers can only be installed from the main thread; elsewhere (a launcher's worker
    thread) the context does nothing and signals keep their usual meaning. A signal the process
    ignores (started under `nohup`, a worker of `esper.kernels.worker`) stays ignored.

    `poll`, when given, is asked instead of installing handlers: a job of a joblib sweep reads
    its sweep's stop file (esper.training.sweep_stop), since the sweep decides when its jobs stop.
    """

    def __init__(self, poll: Callable[[], int | None] | None = None) -> None:
        self._signum: int | None = None
        self._poll = poll
        self._previous: dict[int, object] = {}

    @property
    def signum(self) -> int | None:
        """The signal that asked the run to stop, or None."""
        if self._signum is None and self._poll is not None:
            self._signum = self._poll()
        return self._signum

    def adopt(self, signum: int) -> None:
        """Stop on `signum` as if received: under ddp, another rank's signal, agreed in the
        step's all-reduce, so that every rank leaves the epoch after the same step."""
        if self._signum is None:
            self._signum = signum

    def __enter__(self) -> Interruption:
        if self._poll is None and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        global received
        self._signum = received = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()
