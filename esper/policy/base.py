"""What every policy shares: the protocol and the timing of a seed through its lifecycle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from esper.contracts import Decision, Observation, SeedState, SlotObservation

S = SeedState
IN_FLIGHT = (S.GERMINATED, S.TRAINING, S.BLENDING)


class Policy(Protocol):
    """Decides, at each control step, what happens to the seeds. Add one in `esper/policy/`
    and a `conf/policy/<name>.yaml` whose `_target_` builds it.

    The trainer calls `decide` once per control step (the end of each epoch) with what it
    observed; decisions are applied in order, through the quality gates, and published with
    the observation as a `decision_made` event. A policy must be deterministic given its
    constructor arguments and the observations (seed its own RNG), and checkpointable.
    The trainer checks each of these members before training and each decision as it applies
    it (`esper.policy.contract`): a decision its seed's state does not allow fails the run.
    """

    name: str
    """Shown in decision events and run records."""
    may_germinate: bool
    """False lets the trainer skip starting a compile worker (a host-only baseline)."""

    def decide(self, obs: Observation) -> list[Decision]:
        """Decisions for this step; `[Decision(action="wait")]` when there is nothing to do."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The policy's mutable state, as tensors and plain values (checkpoints load with
        `weights_only=True`)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What the run's record says about the policy: its settings, and for a learned one
        where its weights came from."""
        ...


def in_flight(obs: Observation) -> int:
    return sum(s.state in IN_FLIGHT for s in obs.slots)


def slot_choices(obs: Observation) -> list[tuple[SlotObservation, tuple[str, ...]]]:
    """Dormant slots that have at least one allowed blueprint for their activation shape."""
    return [
        (s, obs.allowed_blueprints.get(s.name, ()))
        for s in obs.slots
        if s.state is S.DORMANT and obs.allowed_blueprints.get(s.name)
    ]


def schedule(slot: SlotObservation, training_epochs: int) -> Decision | None:
    """Advance a seed whose kernel is ready, and one that has incubated long enough."""
    if slot.state is S.GERMINATED and slot.kernel_ready:
        return Decision(action="advance", slot=slot.name, reason="kernel ready")
    if slot.state is S.TRAINING and slot.epochs_in_state >= training_epochs:
        return Decision(
            action="advance", slot=slot.name, reason=f"incubated {slot.epochs_in_state} epochs"
        )
    return None


def blended(slot: SlotObservation) -> bool:
    """Fully blended and past its probation: its verdict is due."""
    return slot.state is S.BLENDING and slot.alpha >= 1.0 and slot.verdict_in == 0


def keep_if_it_helps(
    slot: SlotObservation, metric: str = "val_accuracy", threshold: float = 0.0
) -> Decision:
    """A fully blended seed's verdict: fossilize it if its measured contribution to `metric`
    on validation (`val_accuracy` or `val_loss`) exceeds `threshold`, else cull it."""
    value = slot.contribution_accuracy if metric == "val_accuracy" else slot.contribution_loss
    if value is not None and value > threshold:
        return Decision(
            action="fossilize",
            slot=slot.name,
            reason=f"{metric} contribution {value:+.4f} > {threshold}",
        )
    shown = "unmeasured" if value is None else f"{value:+.4f}"
    return Decision(
        action="cull", slot=slot.name, reason=f"{metric} contribution {shown} <= {threshold}"
    )


def lifecycle_decisions(
    obs: Observation, training_epochs: int, judge: Callable[[SlotObservation], Decision]
) -> list[Decision]:
    """Advance seeds on schedule and have the policy judge each fully blended one."""
    decisions: list[Decision] = []
    for slot in obs.slots:
        step = schedule(slot, training_epochs)
        if step is not None:
            decisions.append(step)
        elif blended(slot):
            decisions.append(judge(slot))
    return decisions
