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
    """Statistics of one site, measured on one training batch at each control step (eval mode,
    so dropout and batch-norm updates do not disturb them)."""

    activation_mean: float
    """Mean over every element of the site's output activation."""
    activation_std: float
    """Standard deviation over every element of the site's output activation."""
    grad_norm: float
    """L2 norm of the training-loss gradient reaching the site's output: where the loss pulls."""


class SlotObservation(Frozen):
    """What a policy sees of one seed slot at a control step (end of an epoch)."""

    name: str
    """The site's module name in the host (`blocks.0`); decisions name slots by it."""
    kind: ActivationKind
    """`vector` [B, F], `image` [B, C, H, W] or `sequence` [B, T, D]."""
    shape: tuple[int, ...]
    """The activation shape without the batch dimension."""
    state: SeedState
    """Lifecycle state after this control step's bookkeeping (ticks, kernel attachment)."""
    blueprint: str | None = None
    """The blueprint of the seed in the slot; None while DORMANT."""
    epochs_in_state: int = 0
    """Control steps since the slot entered `state` (0 in the step it entered)."""
    kernel_ready: bool = False
    """GERMINATED only: the kernel is attached and the seed may start TRAINING."""
    alpha: float = 0.0
    """Blend weight of the seed's output: 0 until BLENDING, ramps to 1, 1 when FOSSILIZED."""
    embargo_left: int = 0
    """CULLED only: control steps until the slot is DORMANT again and may germinate."""
    stats: SiteStats | None = None
    """The site's activation and gradient statistics this step; None if not measured."""
    contribution_accuracy: float | None = None
    """BLENDING only: validation accuracy with the seed minus without it (seed bypassed)."""
    contribution_loss: float | None = None
    """BLENDING only: validation loss without the seed minus with it (positive: it helps)."""
    seed_grad_norm_max: float | None = None
    """Largest L2 norm of the seed's own gradient over its training steps so far."""
    tried: dict[str, int] = Field(default_factory=dict)
    """How many times each blueprint has germinated in this slot during the run."""


class Observation(Frozen):
    """Everything a policy is told at one control step. Validation only: never test."""

    epoch: int
    """The epoch that just ended (0-based)."""
    max_epochs: int
    """The run's length in epochs; `epoch / max_epochs` is the run's progress."""
    train_loss: float
    """Mean training loss over the epoch's steps (skipped non-finite steps excluded)."""
    train_accuracy: float
    """Training accuracy over the epoch, measured while training (dropout on)."""
    val_loss: float
    """Validation loss after the epoch, evaluated in eval mode."""
    val_accuracy: float
    """Validation accuracy after the epoch."""
    val_loss_history: tuple[float, ...]
    """Validation loss after every epoch so far, this one last (a resumed run included)."""
    slots: tuple[SlotObservation, ...]
    """Every slot, in the host's module order."""
    allowed_blueprints: dict[str, tuple[str, ...]]
    """Per slot name: the configured blueprints that fit the slot's activation shape."""


Action = Literal["germinate", "advance", "fossilize", "cull", "wait"]


class Decision(Frozen):
    """One thing a policy asks for. The trainer applies it through the quality gates, which may
    refuse (a `gate_refused` event) or cull instead (an `adaptation` event says why).

    - `germinate`: DORMANT slot, with a `blueprint` from `allowed_blueprints[slot]`.
    - `advance`: GERMINATED (kernel ready) -> TRAINING, or TRAINING -> BLENDING. The slot's state
      says which; there is one action because a policy only ever has one way forward.
    - `fossilize` / `cull`: keep or remove a seed (fossilize from BLENDING).
    - `wait`: do nothing; `slot` may be None.
    """

    action: Action
    slot: str | None = None
    """The slot's name; required for every action but `wait`."""
    blueprint: str | None = None
    """`germinate` only."""
    reason: str = ""
    """Free text recorded with the adaptation the decision causes."""
    probabilities: dict[str, float] | None = None
    """Optional: the policy's probability of the chosen action, slot and blueprint, for the
    decision log of a stochastic or learned policy."""


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
    params: int
    latency_us_p50: float
    latency_us_p95: float
    latency_batch: int
    characterisation: list[LatencyPoint] = Field(default_factory=list)


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


class DecisionMade(EventBase):
    """A policy's decisions at one control step, with the observation it decided from, so that
    a run's events.jsonl replays as the decisions its policy took."""

    kind: Literal["decision_made"] = "decision_made"
    policy: str
    observation: Observation
    decisions: list[Decision]


RunStatus = Literal["completed", "stopped", "failed"]


class RunEnded(EventBase):
    kind: Literal["run_ended"] = "run_ended"
    status: RunStatus
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
    | DecisionMade
    | RunEnded,
    Field(discriminator="kind"),
]


# -- the run record (summary.json) ----------------------------------------------------------


class AdaptationRecord(BaseModel):
    """One lifecycle transition, as summary.json and the W&B adaptations table list it."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    epoch: int
    step: int
    slot: str
    blueprint: str | None
    from_state: SeedState = Field(alias="from")
    to_state: SeedState = Field(alias="to")
    reason: str = ""

    @classmethod
    def of(cls, event: Adaptation) -> AdaptationRecord:
        return cls(**event.model_dump(include=set(cls.model_fields)))


class KernelRecord(BaseModel):
    """A kernel attached to a slot: where it came from, what it costs, how fast it ran."""

    slot: str
    epoch: int
    """The epoch whose control step attached it."""
    kernel_id: str
    blueprint: str
    params: int
    latency_us_p50: float
    """Forward latency at `latency_batch`, measured when the kernel was characterised."""
    latency_us_p95: float
    latency_batch: int
    characterisation: list[LatencyPoint]
    compile_s: float
    wait_s: float
    """Seconds from the kernel's request to its attachment."""
    cache: Literal["hit", "miss"]
    source: Literal["memory", "store", "compiled"]
    train_latency_us_p50: float | None = None
    """Forward latency sampled in the training pass (every `seeds.latency_sample_every`)."""
    train_latency_us_p95: float | None = None
    train_latency_samples: int = 0


class KernelLibraryRecord(BaseModel):
    """The kernel library's counters at the end of the run."""

    store: str
    cache_hits: int
    cache_misses: int
    cache_evictions: int
    cache_bytes: int
    store_loads: int
    compiles: int
    compile_failures: int
    blocked_on_compile_s: float
    """Training time spent waiting for a compile that was due but not finished."""
    quarantined: list[str]


class SlotRecord(BaseModel):
    state: SeedState
    blueprint: str | None


class RunRecord(BaseModel):
    """summary.json: what a run was, what it did and what it reached. The one record that the
    console, the W&B sink, the report and the tests read."""

    status: RunStatus
    error: str | None = None
    choices: dict[str, str]
    """The option chosen in each config group (`custom` when composed outside Hydra)."""
    allowed_blueprints: list[str]
    sites: list[str]
    config_hash: str
    """SHA-256 of the configuration less seed, paths, storage and logging: names the experiment."""
    seed: int
    metrics: dict[str, float]
    """Final train/val/test loss and accuracy; empty when the run failed."""
    params: dict[str, int]
    """host, seeds, total."""
    flops_per_sample: dict[str, int]
    """Forward FLOPs a sample: host alone and the grown model (total)."""
    adaptations: list[AdaptationRecord]
    kernels: list[KernelRecord]
    kernel_library: KernelLibraryRecord
    quarantined: list[KernelQuarantined]
    final_slots: dict[str, SlotRecord]
    epochs: int
    """Epochs trained, a resumed run's earlier ones included."""
    resumed_from: str | None = None
    checkpoint: str | None = None
    wandb: dict[str, Any]
    wall_s: float
