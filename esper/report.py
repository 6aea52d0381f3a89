"""Tabulate a sweep: `python -m esper.report <sweep dir> [--by policy]`.

Reads every job's summary.json under the sweep directory and prints a markdown table of test
accuracy (mean and std over seeds) with the parameters it cost, one row per value of `--by`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def load_summaries(sweep_dir: Path) -> list[dict[str, Any]]:
    paths = sorted(sweep_dir.glob("**/summary.json"))
    if not paths:
        raise SystemExit(f"no summary.json under {sweep_dir}")
    return [json.loads(p.read_text()) for p in paths]


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def table(summaries: list[dict[str, Any]], by: str = "policy") -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        groups[str(s["choices"].get(by, s.get(by)))].append(s)
    lines = [
        f"| {by} | seeds | test accuracy | val accuracy | params total | params seeds "
        "| FLOPs a sample | config hash |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, runs in groups.items():
        done = [r for r in runs if r["status"] == "completed"]
        if not done:
            lines.append(f"| {key} | 0 of {len(runs)} completed | | | | | | |")
            continue
        hashes = sorted({r.get("config_hash", "?")[:12] for r in done})
        lines.append(
            f"| {key} | {','.join(str(r['seed']) for r in done)} "
            f"| {_mean_std([r['metrics']['test_accuracy'] for r in done])} "
            f"| {_mean_std([r['metrics']['val_accuracy'] for r in done])} "
            f"| {statistics.mean(r['params']['total'] for r in done):.0f} "
            f"| {statistics.mean(r['params']['seeds'] for r in done):.0f} "
            f"| {statistics.mean(r.get('flops_per_sample', {}).get('total', 0) for r in done):,.0f} "
            f"| {' '.join(hashes)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--by", default="policy", help="config group (or summary key) to group by")
    args = parser.parse_args(argv)
    print(table(load_summaries(args.sweep_dir), args.by))


if __name__ == "__main__":
    main()
