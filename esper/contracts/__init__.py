"""Data that crosses a boundary between parts: specs, kernel metadata, observations, decisions,
events and the run record.

Every model here is pydantic so that it validates at the boundary and serialises the same way to
events.jsonl, summary.json and W&B. Import from `esper.contracts`; the submodules only group them.
"""

from esper.contracts.base import ActivationKind, Frozen, SeedState, activation_kind
from esper.contracts.decisions import Action, Decision, Observation, SiteStats, SlotObservation
from esper.contracts.events import (
    Adaptation,
    DecisionMade,
    EpochEnded,
    Event,
    EventBase,
    GateRefused,
    KernelFailed,
    KernelLatency,
    KernelLoaded,
    KernelQuarantined,
    KernelRequested,
    RunEnded,
    RunStarted,
    RunStatus,
)
from esper.contracts.kernels import KernelMetadata, KernelSpec, LatencyPoint
from esper.contracts.record import (
    AdaptationRecord,
    KernelLibraryRecord,
    KernelRecord,
    RanksRecord,
    RunRecord,
    SlotRecord,
)

__all__ = [
    "Action",
    "ActivationKind",
    "Adaptation",
    "AdaptationRecord",
    "Decision",
    "DecisionMade",
    "EpochEnded",
    "Event",
    "EventBase",
    "Frozen",
    "GateRefused",
    "KernelFailed",
    "KernelLatency",
    "KernelLibraryRecord",
    "KernelLoaded",
    "KernelMetadata",
    "KernelQuarantined",
    "KernelRecord",
    "KernelRequested",
    "KernelSpec",
    "LatencyPoint",
    "Observation",
    "RanksRecord",
    "RunEnded",
    "RunRecord",
    "RunStarted",
    "RunStatus",
    "SeedState",
    "SiteStats",
    "SlotObservation",
    "SlotRecord",
    "activation_kind",
]
