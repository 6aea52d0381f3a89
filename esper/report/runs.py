"""A sweep's runs, read from their directories: summary.json plus what events.jsonl adds (the
resolved configuration, the epoch rows, the adaptations). Nothing here needs W&B."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from esper.events.tables import timeline_rows


def load_runs(sweep_dirs: list[Path]) -> list[dict[str, Any]]:
    """Each run's summary, with `config` (the resolved configuration it started with),
    `history` (its epoch rows), `adaptation_events` and `run_dir` added. A run is read once
    however often the arguments name it. A run whose summary.json is unreadable, or that has
    none (its job was killed), is left out with one line on stderr that names it."""
    paths = sorted({p.resolve() for d in sweep_dirs for p in d.glob("**/summary.json")})
    for events in sorted({p.resolve() for d in sweep_dirs for p in d.glob("**/events.jsonl")}):
        if not (events.parent / "summary.json").exists():
            _skip(events.parent, "no summary.json (the job did not finish: killed?)")
    runs = []
    for path in paths:
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary, dict) or "status" not in summary:
                raise ValueError("not a run summary (no status)")
        except (OSError, ValueError) as exc:
            _skip(path.parent, f"unreadable summary.json ({exc})")
            continue
        summary.update(config={}, history=[], adaptation_events=[], run_dir=str(path.parent))
        events = path.parent / "events.jsonl"
        if events.is_file():
            with events.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    try:
                        _add(summary, json.loads(line))
                    except (ValueError, KeyError, TypeError):
                        _skip(path.parent, f"events.jsonl line {number} unreadable: ignored")
        runs.append(summary)
    if not runs:
        raise SystemExit(f"no readable summary.json under {', '.join(map(str, sweep_dirs))}")
    return runs


def _skip(run_dir: Path, why: str) -> None:
    print(f"esper.report: {run_dir}: {why}", file=sys.stderr)


def _add(run: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event.get("kind")
    if kind == "run_started" and not run["config"]:
        run["config"] = event.get("config", {})
    elif kind == "epoch_ended":
        run["history"].append({**event["metrics"], "epoch": event["epoch"], "step": event["step"]})
    elif kind == "adaptation":
        run["adaptation_events"].append(event)


def val_by_epoch(run: dict[str, Any]) -> dict[int, float]:
    return {int(r["epoch"]): r["val/accuracy"] for r in run["history"] if "val/accuracy" in r}


def policy_of(run: dict[str, Any]) -> str:
    """The run's policy option (`none`, `heuristic`, ...), for colours and legends."""
    choice = run.get("choices", {}).get("policy")
    if choice and choice not in ("custom", "None"):
        return str(choice)
    target = str(run.get("config", {}).get("policy", {}).get("_target_", "?"))
    return target.rsplit(".", 1)[-1]


def timeline(run: dict[str, Any]) -> list[list[Any]]:
    """The run's seed_timeline rows, as its W&B table has them."""
    slots = list(run.get("final_slots", {}))
    last = run["history"][-1] if run["history"] else {"epoch": -1, "step": 0}
    return timeline_rows(run["adaptation_events"], slots, int(last["epoch"]) + 1, last["step"])
