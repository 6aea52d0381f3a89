"""A sweep's runs, read from their directories: summary.json plus what events.jsonl adds (the
resolved configuration, the epoch rows, the adaptations). Nothing here needs W&B."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from esper.config import RESULT_GROUPS
from esper.contracts import SeedState
from esper.events.tables import timeline_rows


class NoRuns(SystemExit):
    """No readable run under the directories named: a SystemExit with its message, so that a
    script stops with one line, and the command line can tell it apart as a usage error."""


def load_runs(sweep_dirs: list[Path]) -> list[dict[str, Any]]:
    """Each run's summary, with `config` (the resolved configuration it started with),
    `history` (its epoch rows), `adaptation_events` and `run_dir` added. A run is read once
    however often the arguments name it. A run whose summary.json is unreadable or is no run
    record, or that has none (its job was killed), is left out with one line on stderr that
    names it; so is an events.jsonl line that is not a JSON object."""
    found = _run_files(sweep_dirs)
    paths = sorted(found["summary.json"])
    now = time.time()
    for events in sorted(found["events.jsonl"]):
        if events.parent / "summary.json" not in found["summary.json"]:
            age = now - events.stat().st_mtime
            _skip(
                events.parent,
                f"no summary.json yet (events.jsonl written {age:.0f} s ago: still running?)"
                if age < RECENT_S
                else "no summary.json (the job did not finish: killed?)",
            )
    for log in sorted(found["run.log"]):
        job = log.parent
        if job / "summary.json" not in found["summary.json"] and (
            job / "events.jsonl" not in found["events.jsonl"]
        ):
            said = _refusal_in(log)  # helper-found: a refused job was counted as unfinished
            if said:
                _skip(job, f"no run: the job was refused ({said})")
    for sweep in sweep_dirs:  # helper-found: a sweep's jobs not yet started went unsaid
        expected = expected_jobs(sweep / "multirun.yaml")
        finished = len({p.parent for p in paths if p.is_relative_to(sweep.resolve())})
        if expected is not None and finished < expected:
            _skip(
                sweep,
                f"{finished} of its {expected} jobs have a summary.json (the others have not "
                "started, are running, were refused or were stopped)",
            )
    runs = []
    for path in paths:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(summary, dict) or "status" not in summary:
                raise ValueError("not a run summary (no status)")
            problem = _not_a_record(summary)
            if problem:
                raise ValueError(f"not a run summary: {problem}")
        except (OSError, ValueError) as exc:
            _skip(path.parent, f"unreadable summary.json ({exc}): left out")
            continue
        summary.update(config={}, history=[], adaptation_events=[], run_dir=str(path.parent))
        _read_events(summary, path.parent / "events.jsonl")
        _read_earlier(summary, {path.parent})
        if not summary["config"]:
            _skip(
                path.parent,
                "no configuration (events.jsonl missing, or no readable run_started line): the "
                "other runs of its config hash give it, if one has it",
            )
        runs.append(summary)
    if not runs:
        raise NoRuns(f"no readable summary.json under {', '.join(map(str, sweep_dirs))}")
    return _unique(runs)


def _run_files(sweep_dirs: list[Path]) -> dict[str, set[Path]]:
    """Each run file under the directories (summary.json, events.jsonl, run.log), resolved, by
    name: one walk of each tree, which a sweep's wandb/ folders make large."""
    found: dict[str, set[Path]] = {"summary.json": set(), "events.jsonl": set(), "run.log": set()}
    for folder in sweep_dirs:
        for path in folder.glob("**/*"):
            if path.name in found and path.is_file():
                found[path.name].add(path.resolve())
    return found


RECENT_S = 120.0
"""A job whose events.jsonl was written this recently, without a summary.json, may be running
(a run writes an event at least every epoch)."""

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _refusal_in(log: Path) -> str | None:
    """The `esper: ...` line that refused a job before it built anything (its run.log's last
    such line, as one line), or None."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    start = text.rfind("esper: ")
    if start < 0:
        return None
    said = text[start:].split("\n[", 1)[0]  # to the next log record
    return " ".join(said.split())


def expected_jobs(multirun: Path) -> int | None:
    """How many jobs the sweep that wrote `multirun` (its multirun.yaml) launches: the product
    of its sweeps' lengths under Hydra's basic sweeper, `n_trials` under Optuna's; None where
    that cannot be told (no file, another sweeper, a glob over a group's options)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        hydra = OmegaConf.load(multirun).hydra
        sweeper = hydra.sweeper
        target = str(sweeper._target_)
        if "optuna" in target.lower():
            return int(sweeper.n_trials)
        if target != BASIC_SWEEPER:
            return None
        # the sweeper's params first, the command line's overrides after: one of the same key
        # replaces it (helper-found: both were multiplied, 18 jobs counted for 1)
        arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        arguments += [str(a) for a in hydra.overrides.task]
        by_key = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(arguments)}
        total = 1
        for override in by_key.values():
            if override.is_sweep_override():
                total *= len(list(override.sweep_string_iterator()))
        return total
    except Exception:  # noqa: BLE001 - a sweep it cannot count is not counted, not refused
        return None


def _not_a_record(summary: dict[str, Any]) -> str | None:
    """What of the summary the report reads is missing or of the wrong type (`no seed`), or
    None. Checked here, where the run can be named and left out alone, rather than found when
    a column is computed, where it stopped the whole report with a traceback."""
    for key, kind, name in (
        ("status", str, "a string"),
        ("seed", int, "an integer"),
        ("config_hash", str, "a string"),
    ):
        if key not in summary:
            return f"no {key}"
        if not isinstance(summary[key], kind) or isinstance(summary[key], bool):
            return f"{key} is not {name}"
    choices = summary.get("choices", {})
    if not isinstance(choices, dict) or not all(isinstance(v, str) for v in choices.values()):
        return "choices is not a mapping of config group to option"
    if summary["status"] != "completed":
        return None  # a failed run's metrics are empty, and only its status is shown
    for key, fields in (
        ("metrics", ("test_accuracy", "val_accuracy")),
        ("params", ("total", "seeds")),
    ):
        section = summary.get(key)
        if not isinstance(section, dict):
            return f"{key} is not a mapping"
        for field in fields:
            if not _is_finite(section.get(field)):
                return f"{key}.{field} is not a finite number"
    flops = summary.get("flops_per_sample")
    if not isinstance(flops, dict) or not _is_finite(flops.get("total", 0)):
        return "flops_per_sample.total is not a finite number"
    if not _is_finite(summary.get("train_flops", 0)):
        return "train_flops is not a finite number"
    kernels = summary.get("kernels", [])
    if not isinstance(kernels, list) or not all(map(_is_kernel, kernels)):
        return "kernels is not a list of kernels (blueprint, finite latency_us_p50)"
    return None


def _is_finite(value: Any) -> bool:
    """A completed run's figures are finite: a NaN or infinity (a hand-edited file) made the
    table's standard deviation raise."""
    return _is_number(value) and math.isfinite(value)


def _read_earlier(run: dict[str, Any], seen: set[Path]) -> None:
    """A run resumed from another directory's checkpoint (`trainer.resume=outputs/a` into
    outputs/b) holds in its events.jsonl the epochs since the resume alone: the epoch rows and
    adaptations before it are read from the earlier directory (and from its own earlier one,
    if it too was resumed), as its W&B run catches up on them. helper-found: the report drew
    a seed going from DORMANT straight to BLENDING, and a val curve starting mid-run, where
    summary.json and W&B had the whole run."""
    resumed = run.pop("resumed_from", None)
    if not isinstance(resumed, str):
        return
    parent = Path(resumed).parent
    earlier_dir = parent.parent if parent.name == "checkpoints" else parent
    here = Path(run["run_dir"])
    if not earlier_dir.is_absolute():  # as typed, relative to a working directory not kept
        _skip(  # helper-found: read from wherever the report ran, another run's at times
            here,
            f"resumed from {resumed}, a relative path: its epochs before the resume are not shown",
        )
        return
    if earlier_dir.resolve() in {d.resolve() for d in seen}:
        return  # resumed in place: its events.jsonl holds the whole run
    events = earlier_dir / "events.jsonl"
    if not events.is_file():
        _skip(
            here,
            f"resumed from {earlier_dir}, whose events.jsonl is gone: its epochs before the "
            "resume are not shown",
        )
        return
    earlier: dict[str, Any] = {"config": {}, "history": [], "adaptation_events": []}
    earlier["run_dir"] = str(earlier_dir)
    _read_events(earlier, events)
    differs = [
        key
        for key in ("seed", *RESULT_GROUPS)  # what a resume must share with its run
        if json.dumps(earlier["config"].get(key), sort_keys=True)
        != json.dumps(run["config"].get(key), sort_keys=True)
    ]
    if differs:  # helper-found: a directory replaced since (overwrite) was spliced in
        _skip(
            here,
            f"resumed from {earlier_dir}, which holds another run now ({', '.join(differs)} "
            "differ): its epochs before the resume are not shown",
        )
        return
    _read_earlier(earlier, {*seen, earlier_dir})
    start = min((int(row["epoch"]) for row in run["history"]), default=math.inf)
    run["history"] = [r for r in earlier["history"] if r["epoch"] < start] + run["history"]
    run["adaptation_events"] = [
        a for a in earlier["adaptation_events"] if a["epoch"] < start
    ] + run["adaptation_events"]


def _is_kernel(kernel: Any) -> bool:
    """What the kernel-latency figure reads (a null latency made it raise)."""
    if not isinstance(kernel, dict) or not isinstance(kernel.get("blueprint"), str):
        return False
    trained = kernel.get("train_latency_us_p50")
    return _is_finite(kernel.get("latency_us_p50")) and (trained is None or _is_finite(trained))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_events(run: dict[str, Any], events: Path) -> None:
    """Adds what events.jsonl holds to the run. Lines are decoded one at a time, so that bytes
    a crash or a stray write left in one line cost that line only."""
    if not events.is_file():
        return
    try:
        with events.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    event = json.loads(line.decode("utf-8"))
                    if not isinstance(event, dict):
                        raise TypeError(f"{json.dumps(event)[:40]} is not a JSON object")
                    _add(run, event)
                except (ValueError, KeyError, TypeError) as exc:
                    why = str(exc) or type(exc).__name__
                    _skip(
                        Path(run["run_dir"]),
                        f"events.jsonl line {number} unreadable ({why}): ignored",
                    )
    except OSError as exc:
        _skip(Path(run["run_dir"]), f"events.jsonl unreadable ({exc.strerror}): the rest ignored")


def _unhashed_seeds(run: dict[str, Any]) -> str:
    """The seeds the config hash leaves out beside `seed` (`policy.seed`, `dataset.loader_seed`:
    see esper.app.config_hash) and that still change a run: two runs differing there are two
    measurements, not one run named twice. A run whose configuration was not read counts as
    distinct from every other (nothing shows they are the same)."""
    config = run.get("config") or {}
    if not config:
        return f"unknown:{run['run_dir']}"
    policy, dataset = config.get("policy") or {}, config.get("dataset") or {}
    return json.dumps([policy.get("seed"), dataset.get("loader_seed")])


def _unique(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run for each configuration and seed. Two are the same experiment (a sweep named
    beside a copy of it, a job run again after it failed); counting both would count their
    seed twice, narrowing the spread and the paired interval with no new measurement. They
    are deduplicated rather than refused, since naming a copy is harmless once it counts once:
    the first completed one is kept (a rerun of a failed job replaces it), else the first,
    and each left out is named beside the one kept."""
    kept: dict[tuple[str, int, str], dict[str, Any]] = {}
    for run in runs:
        key = (run["config_hash"], run["seed"], _unhashed_seeds(run))
        first = kept.setdefault(key, run)
        if first is run:
            continue
        if run["status"] == "completed" and first["status"] != "completed":
            kept[key], first, run = run, run, first
        _skip(
            Path(run["run_dir"]),
            f"the same configuration ({key[0][:12]}) and seed ({key[1]}) as {first['run_dir']}: "
            "a duplicate, left out (that one is kept)",
        )
    return list(kept.values())


def _skip(run_dir: Path, why: str) -> None:
    print(f"esper.report: {run_dir}: {why}", file=sys.stderr)


def _add(run: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event.get("kind")
    if kind == "run_started":
        config = event.get("config", {})
        if not isinstance(config, dict):
            raise TypeError("run_started: its config is no mapping")
        if not run["config"]:  # the first run_started: where the run began
            run["config"] = config
            run["resumed_from"] = event.get("resumed_from")
    elif kind == "epoch_ended":
        metrics, epoch, step = event["metrics"], event["epoch"], event["step"]
        if not isinstance(metrics, dict) or not all(map(_is_number, metrics.values())):
            raise TypeError("epoch_ended: its metrics are not all numbers")
        if not (_is_integer(epoch) and _is_integer(step)):
            raise TypeError("epoch_ended: its epoch or step is not an integer")
        run["history"].append({**metrics, "epoch": epoch, "step": step})
    elif kind == "adaptation":
        states = {state.value for state in SeedState}
        if not _is_integer(event.get("epoch")) or not isinstance(event.get("slot"), str):
            raise TypeError("adaptation: its epoch or slot is missing")
        if event.get("from") not in states or event.get("to") not in states:
            raise TypeError("adaptation: its from or to is not a seed state")
        run["adaptation_events"].append(event)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
