"""Germinate on a validation plateau; keep a seed only if it measurably helps on validation."""

from __future__ import annotations

from typing import Any, Literal

from esper.contracts import Decision, Observation, SlotObservation
from esper.models.checks import integer, number, optional_integer
from esper.policy.base import in_flight, keep_if_it_helps, lifecycle_decisions, slot_choices


class HeuristicPolicy:
    may_germinate = True
    name = "heuristic"

    def __init__(
        self,
        patience: int = 3,
        min_delta: float = 1e-3,
        warmup_epochs: int = 3,
        training_epochs: int = 3,
        threshold: float = 0.0,
        metric: Literal["val_accuracy", "val_loss"] = "val_accuracy",
        max_in_flight: int = 1,
        max_seeds: int | None = None,
    ) -> None:
        if metric not in ("val_accuracy", "val_loss"):
            raise ValueError(f"policy.metric={metric!r}; allowed: val_accuracy, val_loss")
        self.patience = integer("policy.patience", patience, 1)
        self.min_delta = number("policy.min_delta", min_delta)
        self.warmup_epochs = integer("policy.warmup_epochs", warmup_epochs, 0)
        self.training_epochs = integer("policy.training_epochs", training_epochs, 1)
        self.threshold = number("policy.threshold", threshold)
        self.metric = metric
        self.max_in_flight = integer("policy.max_in_flight", max_in_flight, 1)
        self.max_seeds = optional_integer("policy.max_seeds", max_seeds, 0, "no limit")
        self.germinated = 0
        self.quiet_since = 0

    @property
    def first_germination_epoch(self) -> int:
        """The earliest epoch count at which a plateau can be seen: after the warm-up, and
        with `patience` epochs to compare against one before them."""
        return max(self.warmup_epochs, self.patience + 1)

    def plateaued(self, obs: Observation) -> bool:
        history = obs.val_loss_history
        epoch = len(history)
        if epoch < self.first_germination_epoch:
            return False
        if epoch - self.quiet_since < self.patience:
            return False
        best_before = min(history[: -self.patience])
        return min(history[-self.patience :]) > best_before - self.min_delta

    def judge(self, slot: SlotObservation, epochs_done: int) -> Decision:
        self.quiet_since = epochs_done
        return keep_if_it_helps(slot, self.metric, self.threshold)

    def choose(self, obs: Observation) -> Decision | None:
        """The dormant slot whose activation receives the largest loss gradient; its least tried
        compatible blueprint (ties go to the configured order)."""
        choices = slot_choices(obs)
        if not choices:
            return None

        def pressure(item: tuple[SlotObservation, tuple[str, ...]]) -> float:
            stats = item[0].stats
            return stats.grad_norm if stats is not None else 0.0

        slot, blueprints = max(choices, key=pressure)
        blueprint = min(blueprints, key=lambda b: slot.tried.get(b, 0))
        grad = slot.stats.grad_norm if slot.stats else float("nan")
        return Decision(
            action="germinate",
            slot=slot.name,
            blueprint=blueprint,
            reason=f"val_loss plateau for {self.patience} epochs; site grad norm {grad:.3g}",
        )

    def decide(self, obs: Observation) -> list[Decision]:
        epochs_done = len(obs.val_loss_history)
        decisions = lifecycle_decisions(
            obs, self.training_epochs, lambda slot: self.judge(slot, epochs_done)
        )
        under_cap = self.max_seeds is None or self.germinated < self.max_seeds
        if under_cap and in_flight(obs) < self.max_in_flight and self.plateaued(obs):
            choice = self.choose(obs)
            if choice is not None:
                self.germinated += 1
                self.quiet_since = len(obs.val_loss_history)
                decisions.append(choice)
        return decisions or [Decision(action="wait")]

    def state_dict(self) -> dict[str, Any]:
        return {"germinated": self.germinated, "quiet_since": self.quiet_since}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.germinated = state["germinated"]
        self.quiet_since = state["quiet_since"]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "warmup_epochs": self.warmup_epochs,
            "threshold": self.threshold,
            "metric": self.metric,
        }
