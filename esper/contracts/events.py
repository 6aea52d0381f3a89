"""Events on the bus: one model per kind, serialised the same way to every sink."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from esper.contracts.base import SeedState
from esper.contracts.decisions import Decision, Observation
from esper.contracts.kernels import LatencyPoint


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
    params: int = 0
    """The seed's parameters after the transition (0 before its kernel is in and once culled)."""
    val_accuracy: float | None = None
    """The val accuracy the control step that made the transition saw (None before the first
    epoch's): the "before" of the adaptation; the next epoch's is its "after"."""


class KernelLoaded(EventBase):
    kind: Literal["kernel_loaded"] = "kernel_loaded"
    slot: str
    kernel_id: str
    blueprint: str
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
    blueprint: str = ""
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


RunStatus = Literal["completed", "stopped", "interrupted", "diverged", "failed"]
"""completed: every epoch ran; stopped: `trainer.stop_after_epoch`; interrupted: SIGINT or
SIGTERM (a checkpoint of the last whole epoch resumes it); diverged: too many non-finite steps
in a row; failed: an error."""


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
