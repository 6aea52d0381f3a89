"""The library answers "the kernel for this spec": from memory, from the store, or compiled now."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from torch import nn
from torch.export import ExportedProgram

from esper.contracts import KernelMetadata, KernelSpec
from esper.kernels.compiler import (
    KernelIntegrityError,
    compile_kernel,
    instantiate,
    load_artifact,
)
from esper.kernels.store import LocalStore

log = logging.getLogger(__name__)


@dataclass
class LoadedKernel:
    metadata: KernelMetadata
    module: nn.Module
    source: Literal["memory", "store", "compiled"]

    @property
    def cache(self) -> Literal["hit", "miss"]:
        return "miss" if self.source == "compiled" else "hit"


@dataclass
class CacheCounts:
    hits: int = 0
    store_loads: int = 0
    compiles: int = 0
    quarantined: list[str] = field(default_factory=list)


class KernelLibrary:
    def __init__(self, store: LocalStore, latency_batch: int = 64) -> None:
        self.store = store
        self.latency_batch = latency_batch
        self._memory: dict[str, tuple[KernelMetadata, ExportedProgram]] = {}
        self.counts = CacheCounts()

    def lookup(self, spec: KernelSpec) -> tuple[KernelMetadata, ExportedProgram, str]:
        key = spec.key()
        cached = self._memory.get(key)
        if cached is not None:
            self.counts.hits += 1
            return cached[0], cached[1], "memory"
        found = self.store.find(key)
        if found is not None:
            try:
                program = load_artifact(self.store.get_artifact(found.kernel_id), found.kernel_id)
            except (KernelIntegrityError, FileNotFoundError) as exc:
                where = self.store.quarantine(found.kernel_id)
                self.counts.quarantined.append(found.kernel_id)
                log.warning("%s; quarantined to %s and compiling again", exc, where)
            else:
                self.store.touch(found.kernel_id)
                self._memory[key] = (found, program)
                self.counts.store_loads += 1
                return found, program, "store"
        compiled = compile_kernel(spec, self.latency_batch)
        self.store.put(compiled.metadata, compiled.artifact)
        self._memory[key] = (compiled.metadata, compiled.program)
        self.counts.compiles += 1
        return compiled.metadata, compiled.program, "compiled"

    def get(self, spec: KernelSpec) -> LoadedKernel:
        metadata, program, source = self.lookup(spec)
        return LoadedKernel(metadata, instantiate(program), source)  # type: ignore[arg-type]
