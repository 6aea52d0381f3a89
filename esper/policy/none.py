"""The host-only baseline: never germinates anything."""

from __future__ import annotations

from typing import Any

from esper.contracts import Decision, Observation


class NoPolicy:
    may_germinate = False
    name = "none"

    def decide(self, obs: Observation) -> list[Decision]:
        return [Decision(action="wait", reason="host-only baseline")]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
