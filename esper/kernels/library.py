"""The library answers "the kernel for this spec": from memory, from a store, or compiled now.

Memory and store hits resolve at once. A compile either runs inline (`async_compile=False`) or
in a worker process while training continues; the seed waits in GERMINATED meanwhile. Whatever
a worker returns is verified, stored and cached on the caller's thread, so the library itself
is only ever touched from that one thread. When the worker machinery breaks, `worker.py`
recovers or raises CompileMachineryError, which no caller may mistake for a failed blueprint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn
from torch.export import ExportedProgram

from esper.atomic import WriteError
from esper.config import first_line
from esper.contracts import KernelMetadata, KernelSpec
from esper.kernels.cache import ByteLRU
from esper.kernels.claims import POLL_S, WaitInterrupted
from esper.kernels.compiler import (
    KernelIntegrityError,
    StaleKernelError,
    check_against_builder,
    compile_kernel,
    instantiate,
    load_artifact,
)
from esper.kernels.integrity import CompileMachineryError
from esper.kernels.requests import Compilation, KernelRequest, StoreWait
from esper.kernels.store import KernelStore
from esper.kernels.worker import WorkerCompiles

log = logging.getLogger(__name__)
Source = Literal["memory", "store", "compiled"]


@dataclass
class LoadedKernel:
    metadata: KernelMetadata
    module: nn.Module
    source: Source


@dataclass
class Resolved:
    metadata: KernelMetadata
    program: ExportedProgram
    source: Source
    spare: nn.Module | None = None
    """A module of the program already instantiated (the one a store load checked), for the
    first seed to take; every later one instantiates its own."""

    def module(self) -> nn.Module:
        """A fresh trainable module of the kernel: the spare once, then a new instance."""
        spare, self.spare = self.spare, None
        return spare if spare is not None else instantiate(self.program)


@dataclass
class Quarantine:
    kernel_id: str
    location: str
    error: str


@dataclass
class LibraryCounts:
    store_loads: int = 0
    compiles: int = 0
    compile_failures: int = 0
    claim_waits: int = 0
    """Kernels another job of the sweep was compiling: waited for and loaded from the store."""
    quarantined: list[str] = field(default_factory=list)


class KernelLibrary:
    """Kernels by spec: the in-memory LRU, then the store (verified by content hash), then a
    compile (in a worker process when `async_compile`, else here).

    Args:
        store: where kernels persist (`LocalStore` or `S3Store`); shared data, not trusted code.
        cache_bytes: bound of the in-memory LRU, in artifact bytes.
        latency_batches: batch sizes a new kernel is characterised at.
        reference_batch: the batch of a kernel's headline latency p50/p95.
        async_compile: compile in a worker process (training goes on) instead of inline.
        workers: compile worker processes.

    `request(spec)` never waits for a compile; `get(spec)` does. `close()` lets queued compiles
    finish and stores them, so the next run gets them free.
    """

    def __init__(
        self,
        store: KernelStore,
        cache_bytes: int = 256 << 20,
        latency_batches: Sequence[int] = (1, 64),
        reference_batch: int = 64,
        async_compile: bool = True,
        workers: int = 1,
    ) -> None:
        self.store = store
        self.latency_batches = tuple(latency_batches)
        self.reference_batch = reference_batch
        self.cache: ByteLRU[Resolved] = ByteLRU(cache_bytes)
        self.counts = LibraryCounts()
        self.workers = workers
        self._pending: dict[str, Compilation] = {}
        self._quarantines: list[Quarantine] = []
        self._waited: set[str] = set()
        self._compiles = WorkerCompiles(workers, latency_batches, reference_batch, async_compile)
        self.stop_requested: Callable[[], bool] = lambda: False
        """Set by the trainer: whether SIGINT/SIGTERM arrived, so that waiting for another
        job's compile ends (`WaitInterrupted`) instead of outliving the signal."""

    @property
    def async_compile(self) -> bool:
        """Whether compiles run in a worker: as asked, until a worker could not start here."""
        return self._compiles.async_compile

    @property
    def fallback(self) -> str | None:
        """Why compiles run inline although a worker was asked for; None while they do not."""
        return self._compiles.fallback

    # -- synchronous path ------------------------------------------------------------------
    def lookup(self, spec: KernelSpec) -> Resolved:
        """Memory, then the store (verified), then compile here and store."""
        cached = self.cache.get(spec.key())
        if cached is not None:
            return Resolved(cached.metadata, cached.program, "memory")
        return self._from_store(spec.key()) or self.compile_once(spec)

    def compile_once(self, spec: KernelSpec) -> Resolved:
        """Compile here under the store's claim, or wait while another job compiles it and
        load it from the store (`esper.kernels.claims`)."""
        key = spec.key()
        while True:
            compiled = self._compile_if_claimed(spec)
            if compiled is not None:
                return compiled
            self._note_wait(spec)
            if self.stop_requested():
                raise WaitInterrupted(f"interrupted while waiting for {spec.blueprint}'s compile")
            time.sleep(POLL_S)
            stored = self._from_store(key)
            if stored is not None:
                return stored

    def poll_store(self, spec: KernelSpec) -> Resolved | None:
        """The kernel if the job holding its claim has stored it; compiled here should the
        claim have been given up without a kernel."""
        stored = self._from_store(spec.key())
        return stored if stored is not None else self._compile_if_claimed(spec)

    def _claim_or_find(self, key: str) -> tuple[bool, Resolved | None]:
        """Claim the kernel's compile, then look in the store once more: a job that compiled,
        stored and released it between this job's store miss and its claim leaves nothing to
        compile (seen as 4 compiles of 3 kernels in a 4-job S3 sweep). Returns whether the
        claim was won, and the stored kernel if there is one (the claim is then released)."""
        if not self.store.claim(key):
            return False, None
        try:
            stored = self._from_store(key)
        except BaseException:
            self.store.release(key)
            raise
        if stored is not None:
            self.store.release(key)
        return True, stored

    def _compile_if_claimed(self, spec: KernelSpec) -> Resolved | None:
        """Compile here if this job wins the claim (released after); None if another holds it."""
        key = spec.key()
        claimed, stored = self._claim_or_find(key)
        if not claimed or stored is not None:
            return stored
        try:
            return self._compile_here(spec)
        finally:
            self.store.release(key)

    def _note_wait(self, spec: KernelSpec) -> None:
        """Count and log a kernel another job is compiling, once per kernel however often it
        is polled or asked for."""
        if spec.key() not in self._waited:
            self._waited.add(spec.key())
            self.counts.claim_waits += 1
            log.info("kernel %s: another job is compiling it; waiting", spec.blueprint)

    def has(self, spec_key: str) -> bool:
        """Whether the kernel resolves without a compile (by its index entry; the artifact is
        verified when it is requested). A bad entry counts as absent and is reported."""
        if spec_key in self.cache:
            return True
        try:
            return self.store.find(spec_key) is not None
        except KernelIntegrityError as exc:
            self._note_quarantine(Quarantine("", "index", str(exc)))
            return False

    def get(self, spec: KernelSpec) -> LoadedKernel:
        resolved = self.lookup(spec)
        return LoadedKernel(resolved.metadata, resolved.module(), resolved.source)

    def _from_store(self, key: str) -> Resolved | None:
        try:
            found = self.store.find(key)
        except KernelIntegrityError as exc:
            self._note_quarantine(Quarantine("", "index", str(exc)))
            return None
        if found is None:
            return None
        try:
            program = load_artifact(self.store.get_artifact(found.kernel_id), found.kernel_id)
            spare = self._check_against_builder(found, program)
        except (KernelIntegrityError, FileNotFoundError, StaleKernelError) as exc:
            said = (
                f"kernel {found.kernel_id[:16]}: {exc}: code its key cannot see changed (a "
                "module imported by name, a file the builder reads)"
                if isinstance(exc, StaleKernelError)
                else str(exc)
            )
            where = self.store.quarantine(found.kernel_id, key)
            self._note_quarantine(Quarantine(found.kernel_id, where, said))
            log.warning("%s; quarantined to %s and compiling again", said, where)
            return None
        self.store.touch(found.kernel_id)
        self.counts.store_loads += 1
        resolved = Resolved(found, program, "store", spare)
        self.cache.put(key, resolved, found.artifact_bytes)
        return resolved

    def _check_against_builder(
        self, found: KernelMetadata, program: ExportedProgram
    ) -> nn.Module | None:
        """`check_against_builder`, whose own failure (a builder that raises now, a module it
        cannot handle) does not fail a kernel that compiled and validated: it is loaded as
        stored, and the warning (run.log) says it was not checked (helper-found: an error
        inside the check culled every seed of a warm run)."""
        try:
            return check_against_builder(found.spec, program)
        except StaleKernelError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's builder may raise anything
            log.warning(
                "kernel %s (%s): not checked against what its blueprint builds now (%s); "
                "loaded as stored",
                found.kernel_id[:16],
                found.spec.blueprint,
                first_line(exc),
            )
            return None

    def _compile_here(self, spec: KernelSpec) -> Resolved:
        try:
            compiled = compile_kernel(spec, self.latency_batches, self.reference_batch)
        except Exception:
            self.counts.compile_failures += 1
            raise
        return self._adopt(compiled.metadata, compiled.artifact, compiled.program)

    def _adopt(
        self, metadata: KernelMetadata, artifact: bytes, program: ExportedProgram
    ) -> Resolved:
        self.store.put(metadata, artifact)
        self.counts.compiles += 1
        resolved = Resolved(metadata, program, "compiled")
        self.cache.put(metadata.spec_key, resolved, metadata.artifact_bytes)
        return resolved

    # -- asynchronous path -----------------------------------------------------------------
    def request(self, spec: KernelSpec) -> KernelRequest:
        """Resolve without waiting for a compile. Hits resolve here, at once, so a warm library
        gives the same run every time; a compile goes to the worker, shared by later requests."""
        key = spec.key()
        compilation = self._pending.get(key)
        if compilation is not None:
            return KernelRequest(self, compilation=compilation, joined=True)
        try:
            cached = self.cache.get(key)
            if cached is not None:
                return KernelRequest(self, Resolved(cached.metadata, cached.program, "memory"))
            if not self.async_compile:
                return KernelRequest(self, self.lookup(spec))
            stored = self._from_store(key)
            if stored is not None:
                return KernelRequest(self, stored)
            claimed, stored = self._claim_or_find(key)
            if not claimed:
                self._note_wait(spec)
                return KernelRequest(self, awaiting=StoreWait(self, spec))
            if stored is not None:
                return KernelRequest(self, stored)
        except Exception as exc:  # noqa: BLE001 - delivered through the request
            return KernelRequest(self, error=exc)
        try:
            compilation = Compilation(self._compiles.submit(spec))
        except BaseException:
            self.store.release(key)  # never leave the sweep waiting on a compile not started
            raise
        self._pending[key] = compilation
        return KernelRequest(self, compilation=compilation)

    def start_worker(self) -> None:
        """Start (and warm up) the compile worker now, so the first compile does not wait for
        a Python process to import torch."""
        self._compiles.start()

    def finish(self, compilation: Compilation) -> Resolved:
        """Verify, store and cache what a worker compiled (once, for all who asked). A broken
        worker is recovered from, or raises CompileMachineryError: not a compile failure."""
        if compilation.resolved is None and compilation.error is None:
            self._pending.pop(compilation.spec.key(), None)
            try:
                metadata_json, artifact = self._compiles.outcome(compilation.job)
                metadata = KernelMetadata.model_validate_json(metadata_json)
                program = load_artifact(artifact, metadata.kernel_id)
                compilation.resolved = self._adopt(metadata, artifact, program)
            except (CompileMachineryError, WriteError) as exc:  # not the blueprint's failure
                compilation.error = exc
            except Exception as exc:  # noqa: BLE001 - re-raised to every requester
                self.counts.compile_failures += 1
                compilation.error = exc
            finally:
                self.store.release(compilation.spec.key())
        if compilation.error is not None:
            raise compilation.error
        assert compilation.resolved is not None
        return compilation.resolved

    def finish_ready(self) -> None:
        """Adopt compiles nobody is waiting on (prewarm), so that later requests hit memory."""
        for compilation in list(self._pending.values()):
            if compilation.job.future.done():
                try:
                    self.finish(compilation)
                except Exception as exc:  # noqa: BLE001 - the requester, if any, sees it too
                    log.warning("compile of %s failed: %s", compilation.spec.blueprint, exc)

    # -- bookkeeping -----------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """The cache's and library's counters, as logged each epoch."""
        stats, counts = self.cache.stats, self.counts
        return {
            "kernel_cache/hits": float(stats.hits),
            "kernel_cache/misses": float(stats.misses),
            "kernel_cache/evictions": float(stats.evictions),
            "kernel_cache/bytes": float(stats.bytes),
            "kernel_library/store_loads": float(counts.store_loads),
            "kernel_library/compiles": float(counts.compiles),
            "kernel_library/quarantined": float(len(counts.quarantined)),
        }

    def _note_quarantine(self, notice: Quarantine) -> None:
        if notice.kernel_id:
            self.counts.quarantined.append(notice.kernel_id)
        self._quarantines.append(notice)

    def drain_quarantines(self) -> list[Quarantine]:
        notices, self._quarantines = self._quarantines, []
        return notices

    def kernels_for(
        self, blueprint: str, shape: Sequence[int], device: str = "cpu"
    ) -> list[KernelMetadata]:
        """Every stored kernel of blueprint B at activation shape S on device kind D."""
        return [
            k.metadata
            for k in self.store.list()
            if k.metadata.spec.blueprint == blueprint
            and tuple(k.metadata.spec.input_shape) == tuple(shape)
            and k.metadata.spec.device == device
        ]

    def close(self) -> None:
        """Let queued compiles finish and store them (the next run or job gets them free), and
        stop the worker: no path out of a run leaves it running (nor a killed run: the worker
        watches its parent)."""
        self._compiles.closing = True
        try:
            self._compiles.close()
            self.finish_ready()
        finally:
            self._compiles.pool.close(wait=False)
            self._compiles.closing = False
