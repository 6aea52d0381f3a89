"""Which decisions are legal now: the masks that keep a sampling policy from emitting an
illegal one. Legal means the lifecycle allows the transition and the blueprint fits the slot;
the quality gates may still refuse a legal decision (that is measured, not masked)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from esper.contracts import Observation, SeedState
from esper.policy.contract import legal

S = SeedState
OPERATIONS = ("wait", "germinate", "advance", "fossilize", "cull")
"""The operation head's outputs, in order."""
IN_FLIGHT = (S.GERMINATED, S.TRAINING, S.BLENDING)


@dataclass(frozen=True)
class ActionMasks:
    """`operation` [ops]; `slot` [ops, slots]: the slots each operation may name; `blueprint`
    [slots, blueprints]: what may germinate where (over `blueprints`, the library's order)."""

    operation: torch.Tensor
    slot: torch.Tensor
    blueprint: torch.Tensor
    blueprints: tuple[str, ...]


def library_order(obs: Observation) -> tuple[str, ...]:
    """Every blueprint offered at some slot, in the configured order."""
    seen: dict[str, None] = {}
    for names in obs.allowed_blueprints.values():
        seen.update(dict.fromkeys(names))
    return tuple(seen)


def action_masks(obs: Observation, max_in_flight: int, may_germinate: bool) -> ActionMasks:
    """The legal (operation, slot, blueprint) choices for `obs`.

    `may_germinate` folds in a policy's own caps (its seed budget); `max_in_flight` caps the
    seeds between germination and their end.
    """
    blueprints = library_order(obs)
    slots = obs.slots
    column = {name: i for i, name in enumerate(blueprints)}
    blueprint = torch.zeros((len(slots), len(blueprints)), dtype=torch.bool)
    for i, observed in enumerate(slots):
        for name in obs.allowed_blueprints.get(observed.name, ()):
            blueprint[i, column[name]] = True
    in_flight = sum(s.state in IN_FLIGHT for s in slots)
    can_germinate = may_germinate and in_flight < max_in_flight
    slot = torch.zeros((len(OPERATIONS), len(slots)), dtype=torch.bool)
    for i, s in enumerate(slots):
        for op, name in enumerate(OPERATIONS[1:], start=1):  # as the trainer will apply them
            slot[op, i] = legal(name, s.state, s.kernel_ready)
        slot[1, i] = bool(slot[1, i]) and can_germinate and bool(blueprint[i].any())
    operation = slot.any(dim=1)
    operation[0] = True  # waiting is always legal
    return ActionMasks(operation, slot, blueprint, blueprints)


def germination_only(masks: ActionMasks) -> ActionMasks:
    """`masks` with only wait and germinate left to choose (`policy.lifecycle=schedule`: the
    rest of a seed's lifecycle follows the schedule)."""
    scheduled = [OPERATIONS.index(op) for op in ("advance", "fossilize", "cull")]
    operation = masks.operation.clone()
    operation[scheduled] = False
    slot = masks.slot.clone()
    slot[scheduled] = False
    return ActionMasks(operation, slot, masks.blueprint, masks.blueprints)
