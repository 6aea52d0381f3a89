"""A kernel on its way to a slot: compiling in a worker, awaited from another job's compile,
or already resolved. The library hands these out; the trainer polls them between epochs."""

from __future__ import annotations

from concurrent.futures import wait
from typing import TYPE_CHECKING

from esper.contracts import KernelSpec
from esper.kernels.worker import Job

if TYPE_CHECKING:
    from esper.kernels.library import KernelLibrary, LoadedKernel, Resolved, Source


class Compilation:
    """One compile in a worker, shared by every request for the same spec."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.spec = job.spec
        self.resolved: Resolved | None = None
        self.error: BaseException | None = None


class StoreWait:
    """A kernel another job of the sweep is compiling (it holds the claim): done() looks for
    it in the store; wait() blocks until it is there (or compiles it here, should the claim
    be given up without a kernel: the claimant died or its compile failed)."""

    def __init__(self, library: KernelLibrary, spec: KernelSpec) -> None:
        self.library = library
        self.spec = spec
        self.resolved: Resolved | None = None

    def done(self) -> bool:
        if self.resolved is None:
            self.resolved = self.library.poll_store(self.spec)
        return self.resolved is not None

    def wait(self) -> None:
        if self.resolved is None:
            self.resolved = self.library.compile_once(self.spec)


class KernelRequest:
    """A kernel on its way: poll done(), then result() gives a fresh module of its own."""

    def __init__(
        self,
        library: KernelLibrary,
        resolved: Resolved | None = None,
        compilation: Compilation | None = None,
        error: BaseException | None = None,
        joined: bool = False,
        awaiting: StoreWait | None = None,
    ) -> None:
        self._library = library
        self._resolved = resolved
        self._compilation = compilation
        self._error = error
        self._joined = joined
        self._awaiting = awaiting

    def done(self) -> bool:
        if self._awaiting is not None:
            return self._awaiting.done()
        return self._compilation is None or self._compilation.job.future.done()

    def wait(self) -> None:
        if self._awaiting is not None:
            self._awaiting.wait()
        elif self._compilation is not None:
            wait([self._compilation.job.future])

    def result(self) -> LoadedKernel:
        if self._error is not None:
            raise self._error
        if self._awaiting is not None:
            self.wait()
            assert self._awaiting.resolved is not None
            self._resolved = self._awaiting.resolved
        resolved = self._resolved
        if resolved is None:
            assert self._compilation is not None
            resolved = self._library.finish(self._compilation)
        source: Source = "memory" if self._joined else resolved.source
        from esper.kernels.library import LoadedKernel

        return LoadedKernel(resolved.metadata, resolved.module(), source)
