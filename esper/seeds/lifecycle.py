"""The seed lifecycle as a transition table; anything not in it raises."""

from __future__ import annotations

from esper.contracts import SeedState

S = SeedState

ALLOWED: dict[SeedState, frozenset[SeedState]] = {
    S.DORMANT: frozenset({S.GERMINATED}),
    S.GERMINATED: frozenset({S.TRAINING, S.CULLED}),
    S.TRAINING: frozenset({S.BLENDING, S.CULLED}),
    S.BLENDING: frozenset({S.FOSSILIZED, S.CULLED}),
    S.FOSSILIZED: frozenset(),
    S.CULLED: frozenset({S.DORMANT}),
}

IN_FLIGHT = frozenset({S.GERMINATED, S.TRAINING, S.BLENDING})
ACTIVE_FORWARD = frozenset({S.TRAINING, S.BLENDING, S.FOSSILIZED})


class InvalidTransition(RuntimeError):
    pass


def check_transition(slot: str, current: SeedState, target: SeedState) -> None:
    if target not in ALLOWED[current]:
        allowed = ", ".join(s.value for s in ALLOWED[current]) or "none (terminal)"
        raise InvalidTransition(
            f"slot {slot}: {current.value} -> {target.value} is not a lifecycle transition; "
            f"allowed from {current.value}: {allowed}"
        )
