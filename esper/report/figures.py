"""The four review figures of a sweep, as PNG files (matplotlib, no display needed).

Each function takes the runs of `esper.report.runs.load_runs` and a path, draws one view and
returns the path: accuracy against parameters added, val accuracy curves with adaptation
markers, the seed lifecycle timeline, and kernel latency by blueprint.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

from esper.report.runs import policy_of, timeline, val_by_epoch  # noqa: E402
from esper.report.table import groups_of, labels  # noqa: E402

STATE_COLOURS = {
    "DORMANT": "#e0e0e0",
    "GERMINATED": "#9ecae1",
    "TRAINING": "#3182bd",
    "BLENDING": "#fd8d3c",
    "FOSSILIZED": "#31a354",
    "CULLED": "#de2d26",
}
MARKERS = {"TRAINING": "^", "BLENDING": "s", "FOSSILIZED": "*", "CULLED": "x"}
"""Adaptation markers on the val curves: where a seed started training, blending, was kept or
removed (GERMINATED is left off: its kernel is not in yet)."""
MAX_TIMELINE_ROWS = 40


def _colours(names: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(sorted(set(names)))}


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_vs_params(runs: list[dict[str, Any]], path: Path) -> Path:
    """A point per completed run: test accuracy against the parameters its seeds added,
    coloured by policy."""
    done = [r for r in runs if r["status"] == "completed"]
    colours = _colours([policy_of(r) for r in done])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for policy, colour in colours.items():
        mine = [r for r in done if policy_of(r) == policy]
        ax.scatter(
            [r["params"]["seeds"] for r in mine],
            [r["metrics"]["test_accuracy"] for r in mine],
            color=colour,
            label=policy,
            alpha=0.8,
            edgecolors="black",
            linewidths=0.4,
        )
    ax.set_xlabel("parameters added by seeds")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs parameters added (a point per run)")
    ax.grid(alpha=0.3)
    if colours:  # no completed run: no point, and matplotlib warns of a legend with nothing
        ax.legend(title="policy", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no run completed", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def val_curves(runs: list[dict[str, Any]], path: Path) -> Path:
    """One panel per config group, a line per seed, a marker at each adaptation."""
    groups = groups_of(runs)
    names = labels(groups)
    order = sorted(groups, key=lambda h: names[h])
    cols = min(3, len(order))
    rows_n = -(-len(order) // cols)
    fig, axes = plt.subplots(
        rows_n,
        cols,
        figsize=(4.6 * cols, 3.4 * rows_n),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, config_hash in zip(axes.flat, order):
        for run in groups[config_hash]:
            val = val_by_epoch(run)
            epochs = sorted(val)
            (line,) = ax.plot(epochs, [val[e] for e in epochs], lw=1.2, label=f"seed {run['seed']}")
            for a in run["adaptation_events"]:
                marker = MARKERS.get(a["to"])
                if marker is not None and a["epoch"] in val:
                    ax.plot(a["epoch"], val[a["epoch"]], marker, color=line.get_color(), ms=7)
        ax.set_title(textwrap.fill(names[config_hash], 48), fontsize=7)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("val accuracy")
    for ax in list(axes.flat)[len(order) :]:
        ax.axis("off")
    fig.suptitle("Val accuracy; ^ training  s blending  * fossilized  x culled", fontsize=9)
    return _save(fig, path)


def seed_timeline(runs: list[dict[str, Any]], path: Path) -> Path:
    """A Gantt row per (run, slot) that ever held a seed, each state interval a coloured bar;
    rows are grouped by configuration, each group under its label."""
    groups = groups_of(runs)
    names = labels(groups)
    bars: list[tuple[str, str, list[list[Any]]]] = []
    for config_hash in sorted(groups, key=lambda h: names[h]):
        for run in sorted(groups[config_hash], key=lambda r: r["seed"]):
            by_slot: dict[str, list[list[Any]]] = defaultdict(list)
            for row in timeline(run):
                by_slot[row[0]].append(row)
            for slot, intervals in by_slot.items():
                if any(r[2] != "DORMANT" for r in intervals):
                    bars.append((names[config_hash], f"seed {run['seed']} {slot}", intervals))
    shown = bars[:MAX_TIMELINE_ROWS]
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.3 * max(1, len(shown))), layout="constrained")
    previous = None
    for y, (group, _, intervals) in enumerate(shown):
        for _, _, state, start, end, _, _ in intervals:
            ax.barh(y, max(end - start, 0.15), left=start, color=STATE_COLOURS[state], height=0.7)
        if group != previous:
            ax.axhline(y - 0.5, color="black", lw=0.6)
            ax.text(0, y - 0.45, textwrap.shorten(group, 90), fontsize=6.5, va="bottom")
            previous = group
    ax.set_yticks(range(len(shown)), [name for _, name, _ in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -1.2)
    ax.set_xlabel("epoch")
    title = "Seed lifecycle (slots that held a seed)"
    if len(bars) > len(shown):
        title += f"; first {len(shown)} of {len(bars)} rows"
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLOURS.values()]
    fig.legend(handles, list(STATE_COLOURS), fontsize=7, ncol=6, loc="outside lower center")
    if not shown:
        ax.text(0.5, 0.5, "no seed was germinated", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def kernel_latency(runs: list[dict[str, Any]], path: Path) -> Path:
    """Per blueprint, the p50 forward latency of every kernel the sweep attached: as
    characterised at load, and as sampled in training where it was."""
    loaded: dict[str, list[float]] = defaultdict(list)
    trained: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for k in run.get("kernels", []):
            loaded[k["blueprint"]].append(k["latency_us_p50"])
            if k.get("train_latency_us_p50") is not None:
                trained[k["blueprint"]].append(k["train_latency_us_p50"])
    names = sorted(loaded)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    if names:
        at = range(len(names))
        ax.boxplot([loaded[n] for n in names], positions=[i - 0.18 for i in at], widths=0.3)
        with_train = [i for i, n in enumerate(names) if trained[n]]
        if with_train:
            ax.boxplot(
                [trained[names[i]] for i in with_train],
                positions=[i + 0.18 for i in with_train],
                widths=0.3,
                boxprops={"color": "tab:blue"},
            )
        ax.set_xticks(list(at), names, fontsize=8, rotation=30, ha="right")
    else:
        ax.text(0.5, 0.5, "no kernels were attached", ha="center", transform=ax.transAxes)
    ax.set_ylabel("forward latency p50 (µs)")
    ax.set_title("Kernel latency by blueprint (black: at load, blue: in training)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


FIGURES = {
    "accuracy_vs_params": accuracy_vs_params,
    "val_curves": val_curves,
    "seed_timeline": seed_timeline,
    "kernel_latency": kernel_latency,
}
