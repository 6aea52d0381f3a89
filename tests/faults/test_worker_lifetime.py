"""The compile worker never outlives its run, and its failures are not a seed's.

Faults injected: SIGKILL of the process that owns the worker; a library dropped without close();
a worker killed in the middle of a compile, once and every time; a worker that cannot start.
Before the fix a killed run left its worker blocked on the task queue for ever (it holds both
ends of that pipe, so it never sees EOF), a dropped library kept its worker until interpreter
exit, and a dead worker culled the seed as if its blueprint had failed.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import torch
from torch import nn

from esper import blueprints, kernels
from esper.app import build
from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore
from tests.conftest import ONE_EARLY_SEED, ROOT

MARKER = "ESPER_TEST_WORKER_DIED_ONCE"


class ZeroAtBirth(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.down = nn.Linear(features, 4)
        self.up = nn.Linear(4, features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.tanh(self.down(x)))


def in_a_worker() -> bool:
    return multiprocessing.parent_process() is not None


@blueprints.register("kills_its_worker_for_test", kinds=("vector",))
def kills_its_worker(shape: tuple[int, ...]) -> nn.Module:
    """Ends the compile worker whenever a worker builds it (the run's own checks build it)."""
    if in_a_worker():
        os._exit(9)
    return ZeroAtBirth(shape[-1])


@blueprints.register("kills_its_worker_once_for_test", kinds=("vector",))
def kills_its_worker_once(shape: tuple[int, ...]) -> nn.Module:
    """Ends the first worker that builds it (the file named by $MARKER records that it did)."""
    marker = Path(os.environ[MARKER])
    if in_a_worker() and not marker.exists():
        marker.touch()
        os._exit(9)
    return ZeroAtBirth(shape[-1])


def dies_on_warm_up() -> bool:
    """Stands in for the worker's warm-up: a worker that dies before it can do anything."""
    os._exit(3)


def spec(blueprint: str) -> KernelSpec:
    return KernelSpec(
        blueprint=blueprint, hparams={}, input_shape=(4,), torch_version=torch.__version__
    )


def library(tmp_path: Path) -> KernelLibrary:
    return KernelLibrary(LocalStore(tmp_path / "store"), latency_batches=(1,), reference_batch=1)


# -- finding the worker --------------------------------------------------------------------
def is_worker(process: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def workers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if is_worker(p)]


def started_worker_of(pid: int) -> list[psutil.Process]:
    assert wait_for(lambda: bool(workers_of(pid)), 60), "the compile worker never started"
    return workers_of(pid)


# -- lifetime ------------------------------------------------------------------------------
OWNER = """
import sys, time
from pathlib import Path
from esper.kernels import KernelLibrary, LocalStore
library = KernelLibrary(LocalStore(Path(sys.argv[1])))
library.start_worker()
print("started", flush=True)
time.sleep(300)
"""


def test_sigkill_of_the_run_takes_its_compile_worker_with_it(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "store")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    descendants: list[psutil.Process] = []
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "started"
        assert started_worker_of(owner.pid)
        descendants = psutil.Process(owner.pid).children(recursive=True)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert wait_for(lambda: not [p for p in descendants if alive(p)], 10), [
            (p.pid, p.cmdline()) for p in descendants if alive(p)
        ]
    finally:
        owner.kill()  # the processes this test started, by pid, should it have failed
        for process in descendants:
            if alive(process):
                process.kill()


def test_closing_the_library_leaves_no_worker(tmp_path: Path) -> None:
    lib = library(tmp_path)
    lib.start_worker()
    started = started_worker_of(os.getpid())
    lib.close()
    assert not [p for p in started if alive(p)]
    assert not workers_of(os.getpid())


def test_a_library_dropped_without_close_stops_its_worker(tmp_path: Path) -> None:
    """The exception path: whoever forgot close() must not leak a process."""
    lib = library(tmp_path)
    lib.start_worker()
    started = started_worker_of(os.getpid())
    del lib
    gc.collect()
    assert wait_for(lambda: not [p for p in started if alive(p)], 10)


# -- the machinery failing is not the blueprint failing ------------------------------------
def test_a_worker_killed_once_is_restarted_and_the_kernel_still_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MARKER, str(tmp_path / "died"))
    lib = library(tmp_path)
    with caplog.at_level(logging.WARNING, logger="esper.kernels"):
        loaded = lib.request(spec("kills_its_worker_once_for_test")).result()
    lib.close()
    assert (tmp_path / "died").exists(), "the first worker did die"
    assert loaded.source == "compiled" and lib.counts.compiles == 1
    assert lib.counts.compile_failures == 0
    assert (lib.async_compile, lib.fallback) == (True, None)
    assert "restart" in caplog.text


def test_a_worker_that_cannot_start_falls_back_to_inline_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from esper.kernels import worker

    monkeypatch.setattr(worker, "warm_up", dies_on_warm_up)
    lib = library(tmp_path)
    with caplog.at_level(logging.WARNING, logger="esper.kernels"):
        loaded = lib.request(spec("residual_mlp")).result()
    lib.close()
    assert loaded.source == "compiled" and lib.counts.compiles == 1
    assert lib.async_compile is False
    assert lib.fallback is not None and "could not start" in lib.fallback
    assert lib.fallback in caplog.text
    assert not workers_of(os.getpid())


def test_a_worker_that_keeps_dying_fails_the_run_instead_of_culling(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    cfg = make_config(
        *ONE_EARLY_SEED,
        "trainer.max_epochs=6",
        "kernels.preflight=false",  # else compiled in this process before training
        "blueprints.allowed=[kills_its_worker_for_test]",
        run_dir=run_dir,
    )
    with pytest.raises(kernels.CompileMachineryError):
        build(cfg).run()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "CompileMachineryError" in summary["error"]
    assert not [a for a in summary["adaptations"] if a["to"] == "CULLED"]
    assert not workers_of(os.getpid())


SIGTERM_IN_A_CALLBACK = """
import os, signal, time, weakref
from esper.kernels import worker
worker.watch_parent(os.getppid())

class Thing:
    pass

def callback(_):  # as a WeakSet's, run by the garbage collector
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # the handler runs here, inside the callback
        pass

thing = Thing()
ref = weakref.ref(thing, callback)
del thing
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    pass
print("the task ran on", flush=True)
"""


def test_a_sigterm_taken_inside_a_gc_callback_still_ends_the_worker() -> None:
    """A worker's SIGTERM raised its SystemExit inside a weakref callback, where Python prints
    "Exception ignored ... SystemExit: 143" with a traceback and goes on: a policy training
    whose episode diverged printed it beside its one line, and the worker trained on until it
    was killed. The SIGTERM is taken again once the callback has returned."""
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_CALLBACK],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "the task ran on" not in result.stdout, result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, (
        result.stderr
    )
