"""The two review tables a run produces, built from events as events.jsonl stores them (dicts),
so that the W&B sink (live) and the offline report (from files) build the same rows."""

from __future__ import annotations

from typing import Any


def flatten(node: Any, sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested records as keys: `{"params": {"total": 3}}` -> `{"params/total": 3}` (the W&B
    summary) or, with `sep="."`, `params.total` (config keys in the report); lists stay whole."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        return out
    return {prefix[: -len(sep)] if prefix else prefix: node}


ADAPTATION_COLUMNS: list[str | int] = [
    "epoch",
    "step",
    "slot",
    "blueprint",
    "from",
    "to",
    "reason",
    "params",
    "val_before",
    "val_after",
]
TIMELINE_COLUMNS: list[str | int] = [
    "slot",
    "blueprint",
    "state",
    "start_epoch",
    "end_epoch",
    "start_step",
    "end_step",
]


def adaptation_rows(
    adaptations: list[dict[str, Any]], val_by_epoch: dict[int, float]
) -> list[list[Any]]:
    """One row per transition: val_before is what the deciding control step saw, val_after the
    next epoch's val accuracy (None when the run ended first)."""
    rows = []
    for a in adaptations:
        before = a.get("val_accuracy")
        if before is None:
            before = val_by_epoch.get(a["epoch"])
        rows.append(
            [
                a["epoch"],
                a["step"],
                a["slot"],
                a.get("blueprint") or "",
                a["from"],
                a["to"],
                a.get("reason", ""),
                a.get("params", 0),
                before,
                val_by_epoch.get(a["epoch"] + 1),
            ]
        )
    return rows


def timeline_rows(
    adaptations: list[dict[str, Any]], slots: list[str], end_epoch: int, end_step: int
) -> list[list[Any]]:
    """One row per slot and state interval, DORMANT included, in slot order: the slot's state
    from `start` (inclusive) to `end` (exclusive); the last interval ends at the run's end."""
    rows = []
    for slot in slots:
        state, blueprint, start_epoch, start_step = "DORMANT", "", 0, 0
        for a in (a for a in adaptations if a["slot"] == slot):
            rows.append([slot, blueprint, state, start_epoch, a["epoch"], start_step, a["step"]])
            state, start_epoch, start_step = a["to"], a["epoch"], a["step"]
            blueprint = a.get("blueprint") or blueprint
        rows.append([slot, blueprint, state, start_epoch, end_epoch, start_step, end_step])
    return rows
