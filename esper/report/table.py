"""The results table of a sweep: runs grouped by their configuration less the seed (the config
hash), one row per group: test accuracy (mean ± std over seeds) with what it cost: parameters, those
the seeds added, forward FLOPs a sample, and the FLOPs of training. Each row is labelled by the
configuration keys whose values differ between rows (`policy=none model.hidden=[44, 44]`), so a
static wide model and the small host are never merged into one row.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any

from esper.config import NEUTRAL_TRAINER_KEYS
from esper.events.tables import flatten

IGNORED = (
    "seed",
    "run_dir",
    "tags",
    "name",
    "optimized_metric",
    "paths.",
    "logger.",
    "storage.",
    "kernels.",
    "dataset.loader_seed",
    "policy.seed",
    *(f"trainer.{key}" for key in NEUTRAL_TRAINER_KEYS),
)
"""Keys that say where or how a job ran, not what experiment it was."""


def _relevant(config: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(config, ".")
    return {k: v for k, v in flat.items() if not any(k.startswith(i) for i in IGNORED)}


def _mean_std(values: list[float]) -> str:
    """Mean ± sample std; one seed has no spread to show (a `± 0.0000` would claim one)."""
    if len(values) == 1:
        return f"{values[0]:.4f} (one seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def labels(groups: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Per group: what sets it apart, as `key=value`: the config group options that differ
    between groups (`policy=heuristic`), then the values that differ between groups with the
    same option of their group (`model.hidden=[44, 44]` among `model=mlp` runs)."""
    firsts = {h: configured(runs) for h, runs in groups.items()}
    choices = {h: run.get("choices", {}) for h, run in firsts.items()}
    configs = {h: _relevant(run["config"]) for h, run in firsts.items()}
    known = {h for h, run in firsts.items() if run["config"]}
    chosen = sorted(
        g
        for g in {g for c in choices.values() for g in c}
        if not any(g == i.rstrip(".") for i in IGNORED)
        and g not in ("hydra", "paths")
        and len({c.get(g) for c in choices.values()}) > 1
    )
    groups_chosen = {g for c in choices.values() for g in c}
    keys = sorted(
        {
            k
            for c in configs.values()
            for k in c
            # a group's own target is its option's (`policy=heuristic`); one within a group
            # (`trainer.scheduler._target_`) is what the rest of its keys configure
            # (helper-found: rows said `gamma=0.9` without the scheduler)
            if not (
                k.endswith("._target_") and k.count(".") == 1 and k.split(".")[0] in groups_chosen
            )
        }
    )

    def differs(key: str) -> bool:
        group = key.split(".")[0]
        by_option: dict[Any, set[str]] = defaultdict(set)
        for h, config in configs.items():
            if h not in known:
                continue  # no configuration read: its missing keys tell nothing apart
            by_option[choices[h].get(group)].add(json.dumps(config.get(key)))
        return any(len(values) > 1 for values in by_option.values())

    shown = [k for k in keys if differs(k)]
    out = {}
    for h in groups:
        parts = [f"{g}={choices[h].get(g)}" for g in chosen]
        parts += [
            f"{k}={json.dumps(configs[h].get(k)).strip(chr(34))}"
            for k in shown
            if configs[h].get(k) is not None
        ]
        out[h] = " ".join(parts) or "all"
    return out


def configured(members: list[dict[str, Any]]) -> dict[str, Any]:
    """The group's first run whose configuration was read. Its runs share one configuration
    less the seed (their config hash says so), so a run whose events.jsonl is missing or
    truncated costs its group neither its label nor its task."""
    return next((r for r in members if r.get("config")), members[0])


def groups_of(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs by config hash (their configuration less the seed)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run.get("config_hash", "?")].append(run)
    return dict(groups)


COLUMNS = [
    "configuration",
    "seeds",
    "test accuracy",
    "val accuracy",
    "params",
    "params added",
    "FLOPs a sample",
    "train FLOPs",
    "config hash",
]


def rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    """One row per config group, sorted by label, as the markdown and HTML tables show it."""
    groups = groups_of(runs)
    names = labels(groups)
    out = []
    for config_hash, members in sorted(groups.items(), key=lambda item: names[item[0]]):
        done = [r for r in members if r["status"] == "completed"]
        if not done:
            out.append(
                [names[config_hash], f"0 of {len(members)} completed", *[""] * 6, config_hash[:12]]
            )
            continue
        out.append(
            [
                names[config_hash],
                ",".join(str(seed) for seed in sorted(r["seed"] for r in done))  # not walk order
                + _not_completed(members),
                _mean_std([r["metrics"]["test_accuracy"] for r in done]),
                _mean_std([r["metrics"]["val_accuracy"] for r in done]),
                f"{statistics.mean(r['params']['total'] for r in done):,.0f}",
                f"{statistics.mean(r['params']['seeds'] for r in done):,.0f}",
                f"{statistics.mean(r['flops_per_sample'].get('total', 0) for r in done):,.0f}",
                f"{statistics.mean(r.get('train_flops', 0) for r in done):.3g}",
                config_hash[:12],
            ]
        )
    return out


def _not_completed(members: list[dict[str, Any]]) -> str:
    """The seeds of a row that ran but did not complete, with how each ended: they are left
    out of its figures, and a row said nothing of them."""
    others = [f"{r['seed']} {r['status']}" for r in members if r["status"] != "completed"]
    return f" (left out: {', '.join(others)})" if others else ""


def table(runs: list[dict[str, Any]]) -> str:
    """The results table as markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(runs)]
    return "\n".join(lines)
