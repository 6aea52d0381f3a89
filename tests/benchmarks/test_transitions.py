"""A seed state transition (bookkeeping, no compile): target <= 1 us median."""

from __future__ import annotations

from torch import nn

from esper.contracts import SeedState
from esper.seeds import Lifecycle, SeedSlot

S = SeedState
TARGET_US = 1.0


def test_lifecycle_transition(benchmark) -> None:
    life = Lifecycle("site")

    def three() -> None:
        life.move(S.GERMINATED)
        life.move(S.CULLED)
        life.move(S.DORMANT)

    benchmark.group = "transition"
    benchmark(three)
    per_transition = benchmark.stats.stats.median / 3 * 1e6
    benchmark.extra_info.update(per_transition_us=per_transition, target_us=TARGET_US)
    print(f"\nlifecycle transition {per_transition:.3f} us")
    assert per_transition <= TARGET_US


def test_slot_transition_without_hooks(benchmark) -> None:
    slot = SeedSlot("site", nn.Linear(4, 4), (4,), embargo_epochs=0)

    def three() -> None:
        slot._set_state(S.GERMINATED, "")
        slot._set_state(S.CULLED, "")
        slot._set_state(S.DORMANT, "")

    benchmark.group = "transition"
    benchmark(three)
    per_transition = benchmark.stats.stats.median / 3 * 1e6
    benchmark.extra_info.update(per_transition_us=per_transition, target_us=TARGET_US)
    print(f"\nslot transition {per_transition:.3f} us")
    assert per_transition <= TARGET_US


def test_slot_transition_into_and_out_of_the_forward(benchmark) -> None:
    """Entering TRAINING registers a forward hook and leaving removes it: measured, no target."""
    slot = SeedSlot("site", nn.Linear(4, 4), (4,), embargo_epochs=0)
    slot.seed = nn.Linear(4, 4)

    def two() -> None:
        slot.life.state = S.GERMINATED
        slot._set_state(S.TRAINING, "")
        slot._set_state(S.CULLED, "")

    benchmark.group = "transition"
    benchmark(two)
    benchmark.extra_info.update(per_transition_us=benchmark.stats.stats.median / 2 * 1e6)
