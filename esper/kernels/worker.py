"""The compile worker: a separate process, because torch.export flips process-wide switches
(it turns oneDNN off while it traces) that would change the numerics of training running beside
it in a thread. Builders are pure, so the worker builds the same module the trainer would.

The worker must start wherever a run does (a plain run, Hydra's basic launcher, a joblib/loky
sweep job) and must never outlive the process that started it: `CompilePool` owns it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import util as mp_util
from typing import Any

from esper import blueprints
from esper.contracts import KernelSpec
from esper.kernels.compiler import compile_kernel
from esper.kernels.integrity import CompileMachineryError

log = logging.getLogger(__name__)

PARENT_POLL_S = 0.25
"""How often a worker checks that its parent is still there: it is gone this long after."""


def compile_payload(
    spec_json: str,
    latency_batches: Sequence[int],
    reference_batch: int,
    blueprint: blueprints.BlueprintSource,
) -> tuple[str, bytes]:
    """Runs in the worker: (metadata JSON, artifact bytes); the parent verifies and stores them."""
    spec = KernelSpec.model_validate_json(spec_json)
    blueprints.ensure(blueprint)
    compiled = compile_kernel(spec, latency_batches, reference_batch)
    return compiled.metadata.model_dump_json(), compiled.artifact


def warm_up() -> bool:
    """Import torch and the compiler and trace once (torch.export's first call in a process
    costs about a second), before the first request needs them."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(2, 2),))
    return True


def watch_parent(parent_pid: int) -> None:
    """Runs in each worker as it starts: end the worker once its parent is gone. Without it a
    killed run leaves the worker blocked on its task queue for ever (the worker holds both
    ends of that pipe, so it never sees end-of-file).

    A worker ignores SIGINT. Ctrl-C reaches every process of the terminal's group; the parent
    alone decides what it means (a run stops after its step, a policy training stops its pool:
    `worker_pool`). Before, an idle worker died of it and printed a KeyboardInterrupt traceback
    beside the parent's one-line message."""
    global _ready
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    sys.unraisablehook = _retake_swallowed_exit
    # born with SIGINT blocked (`WorkerPool`), and SIGTERM too when spawned from a thread that
    # blocks it (a sweep's, esper.training.sweep_stop): a Ctrl-C pending since is dropped here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # once the worker exits by itself, a SIGTERM must not unwind into its exit handlers
    atexit.register(signal.signal, signal.SIGTERM, signal.SIG_DFL)

    # after multiprocessing's own exit finalizers (its queues' semaphores are released there)
    mp_util.Finalize(None, _skip_teardown, exitpriority=-sys.maxsize)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="esper-watch-parent", daemon=True).start()
    _ready = True


def _skip_teardown() -> None:
    """A worker's last step on its way out: end the process without the interpreter's
    teardown of torch, which took most of a worker's exit, longer than `stop_now` waits for an
    idle worker: one still exiting was sent SIGTERM, which could cut multiprocessing's clean-up
    short (leaked semaphores). Everything a task made is closed by then, and the streams and
    logs are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def spawn_context() -> multiprocessing.context.SpawnContext:
    """The spawn context, usable from any launcher's worker process.

    A process started by loky (joblib's launcher, so every job of a `hydra/launcher=joblib`
    sweep) has "loky" as its default start method, and a spawned child re-applies its
    parent's default before anything else: without loky imported there it dies at once with
    "cannot find context for 'loky'". In such a process only, the default becomes spawn.
    (Measured: under loky, spawn and forkserver children die this way and fork works, but
    fork is unsafe beside torch's threads; with the default reset, spawn works everywhere.)
    """
    current = multiprocessing.get_start_method(allow_none=True)
    if current is not None and current not in multiprocessing.get_all_start_methods():
        log.info("start method %r is foreign to multiprocessing; using spawn", current)
        multiprocessing.set_start_method("spawn", force=True)
    return multiprocessing.get_context("spawn")


class WorkerPool(ProcessPoolExecutor):
    """Spawned workers that are born with SIGINT blocked and ignore it from `watch_parent` on.

    The executor starts a worker inside `submit`, and a worker imports torch for seconds before
    its initializer runs: a Ctrl-C in that time killed it with a KeyboardInterrupt traceback
    beside the run's own one-line stop. Blocked at birth, the Ctrl-C stays pending until
    `watch_parent` ignores it. The parent blocks it only for the `submit` call; one arriving
    meanwhile is taken once `submit` returns."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return super().submit(_unless_stopping, fn, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class WorkerStopping(RuntimeError):
    """A task reached a worker that had been told to stop (SIGTERM from `stop_now`)."""


_stopping = False
"""Set by a worker's SIGTERM (`_exit_cleanly`)."""


def _unless_stopping(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a task, unless this worker was told to stop, whichever handler took the SIGTERM
    (`_exit_cleanly`, or during training the run's `Interruption`). The executor queues one
    task more than it has workers and cannot cancel it: a worker whose task SIGTERM had ended
    took it next and trained on until `stop_now` SIGKILLed it (a flaky test's leaked
    semaphore)."""
    from esper.training import interruption

    if _stopping or interruption.received is not None:
        raise WorkerStopping("this worker was told to stop")
    return fn(*args, **kwargs)


def start_pool(workers: int) -> ProcessPoolExecutor:
    return WorkerPool(
        max_workers=workers,
        mp_context=spawn_context(),
        initializer=watch_parent,
        initargs=(os.getpid(),),
    )


_ready = False
"""Set once `watch_parent` has run: the worker may be given tasks."""

_swallowed = False
"""Set by `_retake_swallowed_exit`: the next SIGTERM is the worker's own, sent again."""

_in_hook = False
"""True while `_retake_swallowed_exit` runs: its SIGTERM waits until it has returned."""


def _exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM in a worker (`stop_now`): unwind, so that what the task made (a run's own compile
    workers, their queues' semaphores) is closed, where dying at once would leak it. Once:
    a second one must not cut that unwinding short (but see `_retake_swallowed_exit`)."""
    global _stopping, _swallowed
    if not _ready:  # still in `watch_parent`: nothing to unwind, and a SystemExit raised in an
        os._exit(128 + signum)  # initializer is printed as a traceback (a flaky slow test)
    if _stopping and not _swallowed:
        return
    _stopping, _swallowed = True, False
    raise SystemExit(128 + signum)


def _retake_swallowed_exit(unraisable: Any) -> None:
    """`sys.unraisablehook` in a worker. A SIGTERM taken while a garbage collector's callback
    runs (a `WeakSet`'s, a `__del__`) raises its SystemExit there, where Python cannot
    propagate it: it printed "Exception ignored in ... SystemExit: 143" with a traceback beside
    the parent's one-line message, and the worker ran on until `stop_now` killed it (seen in a
    policy training whose episode diverged, the fast tier run with one torch thread a
    process). Sent again from a thread of its own, the SIGTERM reaches the worker once the
    callback has returned."""
    global _swallowed, _in_hook
    if unraisable.exc_type is not SystemExit or not _stopping:
        sys.__unraisablehook__(unraisable)
        return
    _swallowed = _in_hook = True
    threading.Thread(target=_send_sigterm_after_hook, daemon=True).start()
    _in_hook = False  # the last statement: the SystemExit must not come inside this hook


def _send_sigterm_after_hook() -> None:
    while _in_hook:
        time.sleep(0.005)
    time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for a block. Leaving it normally waits for the tasks given; leaving it
    by an exception (Ctrl-C, a failed task) cancels the queued tasks and ends the workers at
    once: nobody will read what they are doing, and `ProcessPoolExecutor`'s own exit would first
    run every queued task to its end (a policy training interrupted with `kill -INT` ran the
    rest of its update's episodes before it stopped)."""
    pool = start_pool(workers)
    try:
        yield pool
    except BaseException:
        stop_now(pool)
        raise
    pool.shutdown(wait=True)


def stop_now(pool: ProcessPoolExecutor, idle_s: float = 1.0, grace_s: float = 5.0) -> None:
    """Cancel what is queued and end the workers. With nothing left running, the executor tells
    its idle workers to exit and they do so by themselves (`idle_s`); those still running a task
    get SIGTERM (a run inside stops after its step), and SIGKILL if still there after
    `grace_s`. A signal sent to a worker already exiting could cut its clean-up short."""
    # Python 3.14 has pool.terminate_workers(); before it the processes are only in _processes
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    _join_all(processes, idle_s)
    for process in processes:
        if process.is_alive():
            process.terminate()
    _join_all(processes, grace_s)
    for process in processes:
        if process.is_alive():
            log.warning(
                "worker %s still running %.0f s after SIGTERM: killed", process.pid, grace_s
            )
            process.kill()
            process.join()
    pool.shutdown(wait=True)  # the executor's own thread sees them gone and closes its queues


def _join_all(processes: list[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _stop(pool: ProcessPoolExecutor) -> None:
    """The finalizer: a library dropped on an exception path still stops its worker."""
    pool.shutdown(wait=False, cancel_futures=True)


class CompilePool:
    """The worker processes of one library, started when first needed and restarted at most
    once when they break. `generation` counts starts, so a compile submitted to a pool that
    has since been replaced can be resubmitted without spending the restart again. `proved`
    says whether any worker ever completed a task: a pool that breaks before that could not
    start at all (the caller then compiles inline), one that breaks after it died."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.generation = 0
        self.restarts = 0
        self._proved = threading.Event()
        self._pool: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    @property
    def proved(self) -> bool:
        return self._proved.is_set()

    def start(self) -> None:
        """Start the workers and warm them up, so the first compile does not wait for a
        Python process to import torch."""
        if self._pool is not None:
            return
        pool = start_pool(self.workers)
        self._pool = pool
        self.generation += 1
        self._finalizer = weakref.finalize(self, _stop, pool)
        self._note_proof(pool.submit(warm_up))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """`fn(*args)` in a worker; a pool that cannot take it gives a broken future, so that
        every failure of the machinery reaches the caller the same way."""
        try:
            self.start()
            assert self._pool is not None
            future = self._pool.submit(fn, *args)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            future = Future()
            future.set_exception(BrokenProcessPool(f"{type(exc).__name__}: {exc}"))
            return future
        self._note_proof(future)
        return future

    def _note_proof(self, future: Future[Any]) -> None:
        """A task that came back (even with its own error) proves that workers start here."""
        proved = self._proved  # not self: a pending task must not keep the pool alive

        def note(done: Future[Any]) -> None:
            if not done.cancelled() and not isinstance(done.exception(), BrokenExecutor):
                proved.set()

        future.add_done_callback(note)

    def restart(self) -> None:
        self.restarts += 1
        self.close(wait=False)
        self.start()

    def close(self, wait: bool = True) -> None:
        """Stop the workers; with `wait`, after the queued tasks are done."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=not wait)
            self._pool = None


Payload = tuple[str, bytes]
"""What a compile gives back: (metadata JSON, artifact bytes)."""


@dataclass
class Job:
    """One spec's compile: the future it will come from, and the pool generation it went to."""

    spec: KernelSpec
    future: Future[Payload]
    generation: int


class WorkerCompiles:
    """The compiles of one library in worker processes, and the answer when the machinery
    breaks (the pool broke, a worker died or cannot start), which is never the blueprint's
    fault: restart the pool once; if it breaks again before any worker finished a task,
    workers cannot start here, so compile inline and say why in `fallback`; if it breaks
    again after that, raise CompileMachineryError, and the run fails instead of culling."""

    def __init__(
        self,
        workers: int,
        latency_batches: Sequence[int],
        reference_batch: int,
        async_compile: bool,
    ) -> None:
        self.pool = CompilePool(workers)
        self.latency_batches = tuple(latency_batches)
        self.reference_batch = reference_batch
        self.async_compile = async_compile
        self.fallback: str | None = None
        """Why compiles run inline although a worker was asked for; None while they do not."""
        self.closing = False
        self._failed: CompileMachineryError | None = None
        if async_compile and multiprocessing.current_process().daemon:
            self.async_compile = False
            self.fallback = (
                "this process is daemonic (a multiprocessing.Pool worker) and may not start a "
                "compile worker; compiling inline"
            )
            log.warning("%s", self.fallback)

    def start(self) -> None:
        """Start the worker ahead of the first compile; one that cannot start is dealt with
        when that compile comes back broken."""
        if self.async_compile and self._failed is None:
            try:
                self.pool.start()
            except (OSError, RuntimeError) as exc:
                log.warning("the compile worker did not start: %s", exc)

    def submit(self, spec: KernelSpec) -> Job:
        if self._failed is not None:  # no new pool once the machinery has failed
            failed: Future[Payload] = Future()
            failed.set_exception(self._failed)
            return Job(spec, failed, self.pool.generation)
        return Job(spec, self._submit(spec), self.pool.generation)

    def _submit(self, spec: KernelSpec) -> Future[Payload]:
        source = blueprints.source(spec.blueprint)
        args = (spec.model_dump_json(), self.latency_batches, self.reference_batch, source)
        return self.pool.submit(compile_payload, *args)

    def outcome(self, job: Job) -> Payload:
        """The job's payload, waiting for it; the blueprint's own error is raised as is."""
        while True:
            try:
                return job.future.result()
            except BrokenExecutor as exc:
                job.future = self._recover(job, exc)
                job.generation = self.pool.generation

    def _recover(self, job: Job, exc: BrokenExecutor) -> Future[Payload]:
        pool, what = self.pool, f"{job.spec.blueprint} {list(job.spec.input_shape)}"
        if self._failed is not None:
            raise self._failed
        if not self.async_compile:
            return self._inline(job.spec)
        if self.closing:
            raise CompileMachineryError(f"the compile worker broke as the run ended: {exc}")
        if job.generation < pool.generation and pool.running:
            return self._submit(job.spec)  # the pool was already replaced for another job
        if pool.restarts == 0:
            log.warning("the compile worker broke compiling %s (%s); restarting it", what, exc)
            pool.restart()
            return self._submit(job.spec)
        pool.close(wait=False)
        if not pool.proved:
            self.fallback = f"compile worker could not start ({exc}); compiling inline"
            log.warning("%s", self.fallback)
            self.async_compile = False
            return self._inline(job.spec)
        self._failed = CompileMachineryError(
            f"the compile worker broke again after a restart, compiling {what}: {exc}"
        )
        raise self._failed

    def _inline(self, spec: KernelSpec) -> Future[Payload]:
        """A compile here, delivered (and then verified) as a worker's would be."""
        future: Future[Payload] = Future()
        try:
            compiled = compile_kernel(spec, self.latency_batches, self.reference_batch)
            future.set_result((compiled.metadata.model_dump_json(), compiled.artifact))
        except Exception as exc:  # noqa: BLE001 - the blueprint's own failure, as from a worker
            future.set_exception(exc)
        return future

    def close(self) -> None:
        """Let queued compiles finish, then stop the workers."""
        self.pool.close(wait=True)
