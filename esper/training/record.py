"""The run record's event-fed half: a sink that keeps what summary.json lists.

It holds only what a record needs (adaptations, kernels, quarantines, epochs), not the event
stream, so a long run keeps bounded memory. The rest of the record (metrics, parameters,
library counters) is read from the live parts when the run ends.
"""

from __future__ import annotations

from typing import Any

from esper.contracts import (
    Adaptation,
    AdaptationRecord,
    EpochEnded,
    EventBase,
    KernelLatency,
    KernelLoaded,
    KernelQuarantined,
    KernelRecord,
    RunRecord,
)


class RunRecorder:
    """An event sink; checkpointed with the run so that a resumed run's record is whole.
    Essential: summary.json is built from it."""

    essential = True

    def __init__(self) -> None:
        self.adaptations: list[AdaptationRecord] = []
        self.kernels: list[KernelRecord] = []
        self.quarantined: list[KernelQuarantined] = []
        self.epochs = 0
        self._latest: dict[str, KernelRecord] = {}

    def write(self, events: list[EventBase]) -> None:
        for event in events:
            if isinstance(event, Adaptation):
                self.adaptations.append(AdaptationRecord.of(event))
            elif isinstance(event, KernelLoaded):
                record = KernelRecord(
                    **event.model_dump(include=set(KernelRecord.model_fields) - {"epoch"}),
                    epoch=event.epoch,
                )
                self.kernels.append(record)
                self._latest[record.slot] = record
            elif isinstance(event, KernelLatency):
                latest = self._latest.get(event.slot)
                if latest is not None:
                    latest.train_latency_us_p50 = event.latency_us_p50
                    latest.train_latency_us_p95 = event.latency_us_p95
                    latest.train_latency_samples = event.samples
            elif isinstance(event, KernelQuarantined):
                self.quarantined.append(event)
            elif isinstance(event, EpochEnded):
                self.epochs += 1

    def close(self, record: RunRecord) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "adaptations": [a.model_dump(mode="json") for a in self.adaptations],
            "kernels": [k.model_dump(mode="json") for k in self.kernels],
            "quarantined": [q.model_dump(mode="json") for q in self.quarantined],
            "epochs": self.epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adaptations = [AdaptationRecord.model_validate(a) for a in state["adaptations"]]
        self.kernels = [KernelRecord.model_validate(k) for k in state["kernels"]]
        self.quarantined = [KernelQuarantined.model_validate(q) for q in state["quarantined"]]
        self.epochs = state["epochs"]
        self._latest = {k.slot: k for k in self.kernels}
