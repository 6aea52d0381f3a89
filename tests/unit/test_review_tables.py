"""The adaptations and seed_timeline tables on hand-made events (the W&B sink and the offline
report both build them with esper.events.tables)."""

from __future__ import annotations

from esper.events.schema import SCHEMA, documented
from esper.events.tables import adaptation_rows, timeline_rows


def event(epoch: int, step: int, slot: str, old: str, new: str, **extra) -> dict:
    return {
        "epoch": epoch,
        "step": step,
        "slot": slot,
        "blueprint": "low_rank",
        "from": old,
        "to": new,
        "reason": "r",
        **extra,
    }


EVENTS = [
    event(1, 10, "a", "DORMANT", "GERMINATED", val_accuracy=0.5),
    event(2, 20, "a", "GERMINATED", "TRAINING", params=24, val_accuracy=0.55),
    event(4, 40, "a", "TRAINING", "CULLED", val_accuracy=0.6),
    event(5, 50, "a", "CULLED", "DORMANT", val_accuracy=0.58),
]


def test_adaptation_rows_carry_val_before_and_after() -> None:
    val = {0: 0.4, 1: 0.5, 2: 0.55, 3: 0.57, 4: 0.6, 5: 0.58}
    rows = adaptation_rows(EVENTS, val)
    assert [r[7] for r in rows] == [0, 24, 0, 0]
    assert [(r[8], r[9]) for r in rows] == [(0.5, 0.55), (0.55, 0.57), (0.6, 0.58), (0.58, None)]


def test_timeline_rows_cover_every_epoch_of_every_slot() -> None:
    rows = timeline_rows(EVENTS, ["a", "b"], end_epoch=8, end_step=80)
    assert rows == [
        ["a", "", "DORMANT", 0, 1, 0, 10],
        ["a", "low_rank", "GERMINATED", 1, 2, 10, 20],
        ["a", "low_rank", "TRAINING", 2, 4, 20, 40],
        ["a", "low_rank", "CULLED", 4, 5, 40, 50],
        ["a", "low_rank", "DORMANT", 5, 8, 50, 80],
        ["b", "", "DORMANT", 0, 8, 0, 80],
    ]


def test_schema_patterns_match_one_segment() -> None:
    assert documented("seeds/blocks.0/state")
    assert documented("kernel/low_rank/latency_us_p50")
    assert not documented("seeds/blocks.0/extra/state")
    assert not documented("val/made_up")
    assert len({m.key for m in SCHEMA}) == len(SCHEMA)


def test_the_readme_shows_the_schema_as_it_is() -> None:
    from esper.events.schema import markdown
    from tests.conftest import ROOT

    assert markdown() in (ROOT / "README.md").read_text()
