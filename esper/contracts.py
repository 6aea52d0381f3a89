"""Data that crosses a boundary between parts: specs, kernel metadata, observations, decisions, events.

Every model here is pydantic so that it validates at the boundary and serialises the same way to
events.jsonl, summary.json and W&B.
"""

from __future__ import annotations

import hashlib
import json
import time
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ActivationKind = Literal["vector", "image", "sequence"]


def activation_kind(shape: tuple[int, ...]) -> ActivationKind:
    """Classify a per-sample activation shape (batch dimension excluded)."""
    kinds: dict[int, ActivationKind] = {1: "vector", 2: "sequence", 3: "image"}
    if len(shape) not in kinds:
        raise ValueError(f"activation shape {list(shape)} is not [F], [T, D] or [C, H, W]")
    return kinds[len(shape)]


class SeedState(str, Enum):
    DORMANT = "DORMANT"
    GERMINATED = "GERMINATED"
    TRAINING = "TRAINING"
    BLENDING = "BLENDING"
    FOSSILIZED = "FOSSILIZED"
    CULLED = "CULLED"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KernelSpec(Frozen):
    """What a kernel is built from; its key() names the kernel before it exists."""

    blueprint: str
    hparams: dict[str, Any] = Field(default_factory=dict)
    input_shape: tuple[int, ...]
    dtype: str = "float32"
    device: str = "cpu"
    init_seed: int = 0
    torch_version: str

    def key(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
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


class SiteStats(Frozen):
    """Statistics of a site's activation and of the loss gradient reaching it, from one batch."""

    activation_mean: float
    activation_std: float
    grad_norm: float


class SlotObservation(Frozen):
    name: str
    kind: ActivationKind
    shape: tuple[int, ...]
    state: SeedState
    blueprint: str | None = None
    epochs_in_state: int = 0
    kernel_ready: bool = False
    alpha: float = 0.0
    embargo_left: int = 0
    stats: SiteStats | None = None
    contribution_accuracy: float | None = None
    contribution_loss: float | None = None
    seed_grad_norm_max: float | None = None
    tried: dict[str, int] = Field(default_factory=dict)


class Observation(Frozen):
    epoch: int
    max_epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_loss_history: tuple[float, ...]
    slots: tuple[SlotObservation, ...]
    allowed_blueprints: dict[str, tuple[str, ...]]


Action = Literal["germinate", "advance", "fossilize", "cull", "wait"]


class Decision(Frozen):
    action: Action
    slot: str | None = None
    blueprint: str | None = None
    reason: str = ""


class EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: float = Field(default_factory=time.time)
    epoch: int = 0
    step: int = 0


class RunStarted(EventBase):
    kind: Literal["run_started"] = "run_started"
    config: dict[str, Any]
    resumed_from: str | None = None


class EpochEnded(EventBase):
    kind: Literal["epoch_ended"] = "epoch_ended"
    metrics: dict[str, float]


class Adaptation(EventBase):
    """One lifecycle transition of one slot."""

    kind: Literal["adaptation"] = "adaptation"
    slot: str
    blueprint: str | None
    from_state: SeedState = Field(serialization_alias="from")
    to_state: SeedState = Field(serialization_alias="to")
    reason: str = ""


class KernelLoaded(EventBase):
    kind: Literal["kernel_loaded"] = "kernel_loaded"
    slot: str
    kernel_id: str
    blueprint: str
    cache: Literal["hit", "miss"]
    source: Literal["memory", "store", "compiled"]
    wait_s: float
    compile_s: float
    latency_us_p50: float
    latency_us_p95: float


class KernelRequested(EventBase):
    kind: Literal["kernel_requested"] = "kernel_requested"
    slot: str
    blueprint: str
    spec_key: str
    ready: bool


class KernelFailed(EventBase):
    kind: Literal["kernel_failed"] = "kernel_failed"
    slot: str
    blueprint: str
    error: str


class KernelQuarantined(EventBase):
    """A stored object failed verification; it was moved aside and the kernel is compiled again."""

    kind: Literal["kernel_quarantined"] = "kernel_quarantined"
    kernel_id: str
    location: str
    error: str


class GateRefused(EventBase):
    """A quality gate held a seed back from a transition the policy asked for."""

    kind: Literal["gate_refused"] = "gate_refused"
    slot: str
    gate: str
    reason: str


class KernelLatency(EventBase):
    """Latency of a kernel measured in the training forward pass (sampled, not every step)."""

    kind: Literal["kernel_latency"] = "kernel_latency"
    slot: str
    kernel_id: str
    samples: int
    latency_us_p50: float
    latency_us_p95: float


class RunEnded(EventBase):
    kind: Literal["run_ended"] = "run_ended"
    status: Literal["completed", "stopped", "failed"]
    metrics: dict[str, float]
    error: str | None = None


Event = Annotated[
    RunStarted
    | EpochEnded
    | Adaptation
    | KernelRequested
    | KernelLoaded
    | KernelFailed
    | KernelQuarantined
    | KernelLatency
    | GateRefused
    | RunEnded,
    Field(discriminator="kind"),
]
