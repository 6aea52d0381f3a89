"""A seeded random policy: the baseline that tells whether a smarter policy's choices matter."""

from __future__ import annotations

import random
from typing import Any

from esper.contracts import Decision, Observation, SlotObservation
from esper.models.checks import integer, number, optional_integer
from esper.policy.base import in_flight, lifecycle_decisions, slot_choices


class RandomPolicy:
    may_germinate = True
    name = "random"

    def __init__(
        self,
        seed: int = 0,
        germinate_probability: float = 0.3,
        fossilize_probability: float = 0.5,
        training_epochs: int = 3,
        max_in_flight: int = 1,
        max_seeds: int | None = None,
    ) -> None:
        self.rng = random.Random(integer("policy.seed", seed, 0))
        self.germinate_probability = number(
            "policy.germinate_probability", germinate_probability, 0.0, 1.0
        )
        self.fossilize_probability = number(
            "policy.fossilize_probability", fossilize_probability, 0.0, 1.0
        )
        self.training_epochs = integer("policy.training_epochs", training_epochs, 1)
        self.max_in_flight = integer("policy.max_in_flight", max_in_flight, 1)
        self.max_seeds = optional_integer("policy.max_seeds", max_seeds, 0, "no limit")
        self.germinated = 0

    def judge(self, slot: SlotObservation) -> Decision:
        keep = self.rng.random() < self.fossilize_probability
        return Decision(action="fossilize" if keep else "cull", slot=slot.name, reason="coin flip")

    def decide(self, obs: Observation) -> list[Decision]:
        decisions = lifecycle_decisions(obs, self.training_epochs, self.judge)
        choices = slot_choices(obs)
        under_cap = self.max_seeds is None or self.germinated < self.max_seeds
        if (
            choices
            and under_cap
            and in_flight(obs) < self.max_in_flight
            and self.rng.random() < self.germinate_probability
        ):
            slot, blueprints = self.rng.choice(choices)
            blueprint = self.rng.choice(blueprints)
            self.germinated += 1
            decisions.append(
                Decision(action="germinate", slot=slot.name, blueprint=blueprint, reason="random")
            )
        return decisions or [Decision(action="wait")]

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "germinated": self.germinated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rng_state = state["rng"]
        self.rng.setstate((rng_state[0], tuple(rng_state[1]), rng_state[2]))
        self.germinated = state["germinated"]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "germinate_probability": self.germinate_probability,
            "fossilize_probability": self.fossilize_probability,
            "training_epochs": self.training_epochs,
        }
