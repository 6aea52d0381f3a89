from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from esper.contracts import SeedState
from esper.seeds import ALLOWED, InvalidTransition, SeedSlot, check_transition

S = SeedState


def make_slot(**options) -> SeedSlot:
    return SeedSlot("site", nn.Identity(), (4,), **options)


DESIGNED = {
    (S.DORMANT, S.GERMINATED),
    (S.GERMINATED, S.TRAINING),
    (S.TRAINING, S.BLENDING),
    (S.BLENDING, S.FOSSILIZED),
    (S.GERMINATED, S.CULLED),
    (S.TRAINING, S.CULLED),
    (S.BLENDING, S.CULLED),
    (S.CULLED, S.DORMANT),
}
"""DESIGN.md's seed lifecycle, written out here rather than read from the code's own table."""


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_exactly_the_designed_transitions_are_allowed(
    current: SeedState, target: SeedState
) -> None:
    if (current, target) in DESIGNED:
        check_transition("site", current, target)
        assert target in ALLOWED[current]
    else:
        with pytest.raises(InvalidTransition, match=f"{current.value} -> {target.value}"):
            check_transition("site", current, target)


def test_full_life_emits_every_transition_and_fossilized_is_terminal() -> None:
    slot = make_slot()
    seen: list[tuple[str, str, str]] = []
    slot.on_transition = lambda s, a, b, why: seen.append((a.value, b.value, why))
    slot.germinate("residual_mlp", "plateau")
    slot.attach(nn.Linear(4, 4), "k" * 64)
    slot.start_training()
    slot.start_blending(steps=4)
    slot.fossilize("helps")
    assert [b for _, b, _ in seen] == ["GERMINATED", "TRAINING", "BLENDING", "FOSSILIZED"]
    assert seen[0][2] == "plateau"
    for action in (slot.cull, lambda: slot.germinate("low_rank"), slot.start_training):
        with pytest.raises(InvalidTransition):
            action()
    assert slot.state is S.FOSSILIZED


def test_training_needs_a_kernel() -> None:
    slot = make_slot()
    slot.germinate("residual_mlp")
    with pytest.raises(RuntimeError, match="kernel"):
        slot.start_training()


def test_cull_frees_module_and_embargo_counts_down_to_dormant() -> None:
    slot = make_slot(embargo_epochs=2)
    slot.germinate("residual_mlp")
    slot.attach(nn.Linear(4, 4), "k" * 64)
    slot.start_training()
    slot.cull("no help")
    assert slot.state is S.CULLED and slot.seed is None and slot.seed_parameters() == []
    assert slot.embargo_left == 2
    slot.tick()
    assert slot.state is S.CULLED and slot.embargo_left == 1
    with pytest.raises(InvalidTransition):
        slot.germinate("residual_mlp")
    slot.tick()
    assert slot.state is S.DORMANT


def test_dormant_slot_is_not_in_the_forward_pass() -> None:
    site = nn.Linear(4, 4)
    slot = SeedSlot("site", site, (4,))
    assert not site._forward_hooks
    slot.germinate("residual_mlp")
    slot.attach(nn.Linear(4, 4), "k" * 64)
    assert not site._forward_hooks, "GERMINATED forward is still x"
    slot.start_training()
    assert len(site._forward_hooks) == 1
    slot.cull()
    assert not site._forward_hooks
    x = torch.randn(3, 4)
    assert slot(x) is x
