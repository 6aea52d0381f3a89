"""What a kernel is built from and what is known about it once built."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pydantic import Field

from esper.contracts.base import Frozen


class KernelSpec(Frozen):
    """What a kernel is built from; its key() names the kernel before it exists."""

    blueprint: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    device: str = "cpu"
    init_seed: int = 0
    torch_version: str
    code: str = ""
    """A digest of the blueprint's builder: its qualified name and the source of its module and
    of the user's modules it imports (esper.blueprints.code_digest). Another
    builder under the same name (a user's edit, to the builder or to a helper module it
    imports, another `_target_`, another Esper version) names other kernels, so a shared library
    never hands back a stale one. Empty in specs written before it existed: their keys are
    unchanged."""

    def key(self) -> str:
        fields = self.model_dump(mode="json")
        if not fields["code"]:
            del fields["code"]
        canonical = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class LatencyPoint(Frozen):
    """Latency at one batch size, forward alone and forward + backward, in microseconds."""

    batch: int
    forward_us_p50: float
    forward_us_p95: float
    forward_backward_us_p50: float
    forward_backward_us_p95: float


class KernelMetadata(Frozen):
    kernel_id: str
    spec_key: str
    spec: KernelSpec
    param_count: int
    artifact_bytes: int
    latency_us_p50: float
    latency_us_p95: float
    latency_batch: int
    characterisation: tuple[LatencyPoint, ...] = ()
    compile_s: float
    created_at: float = Field(default_factory=time.time)
