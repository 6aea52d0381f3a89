"""Random action sequences through SeedSlot's public API never reach an invalid state."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from esper.contracts import SeedState
from esper.seeds import ALLOWED, InvalidTransition, SeedSlot

S = SeedState
ACTIONS = ["germinate", "attach", "train", "blend", "fossilize", "cull", "tick", "forward"]


def act(slot: SeedSlot, action: str) -> None:
    if action == "germinate":
        slot.germinate("residual_mlp")
    elif action == "attach":
        slot.attach(nn.Linear(4, 4), "k" * 64)
    elif action == "train":
        slot.start_training()
    elif action == "blend":
        slot.start_blending(steps=2)
    elif action == "fossilize":
        slot.fossilize()
    elif action == "cull":
        slot.cull()
    elif action == "tick":
        slot.tick()
    else:
        slot.train()
        slot._site[0](torch.randn(2, 4))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ACTIONS), max_size=40), st.integers(0, 3))
def test_random_action_sequences_keep_the_lifecycle_valid(actions: list[str], embargo: int) -> None:
    site = nn.Linear(4, 4)
    slot = SeedSlot("site", site, (4,), embargo_epochs=embargo)
    transitions: list[tuple[SeedState, SeedState]] = []
    slot.on_transition = lambda s, a, b, why: transitions.append((a, b))
    fossilized = False
    culled_ticks: int | None = None
    for action in actions:
        before = slot.state
        snapshot = slot.snapshot()
        try:
            act(slot, action)
        except (InvalidTransition, RuntimeError):
            assert slot.snapshot() == snapshot, "a refused action changes nothing"
        if fossilized:
            assert slot.state is S.FOSSILIZED, "FOSSILIZED is terminal"
        fossilized = fossilized or slot.state is S.FOSSILIZED
        if slot.state is S.CULLED:
            culled_ticks = 0 if before is not S.CULLED else culled_ticks
            if action == "tick" and before is S.CULLED:
                culled_ticks += 1
            assert slot.embargo_left == max(0, embargo - culled_ticks)
            assert slot.seed is None
        if slot.state is S.DORMANT:
            assert slot.seed is None and slot.blueprint is None
        hooked = bool(site._forward_hooks)
        assert hooked == (slot.state in (S.TRAINING, S.BLENDING, S.FOSSILIZED))
        assert 0.0 <= slot.alpha <= 1.0
    for old, new in transitions:
        assert new in ALLOWED[old]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 5))
def test_the_embargo_counts_down_to_dormant(embargo: int) -> None:
    slot = SeedSlot("site", nn.Linear(4, 4), (4,), embargo_epochs=embargo)
    slot.germinate("residual_mlp")
    slot.cull()
    ticks = 0
    while slot.state is S.CULLED:
        slot.tick()
        ticks += 1
        assert ticks <= max(1, embargo)
    assert slot.state is S.DORMANT and ticks == max(1, embargo)
