"""Each policy against a reference policy (`--against random`), seed by seed.

The results table gives each configuration's mean ± std over seeds. Whether one policy beats
another is a different question: both runs of a seed share its data split, data order and
initial weights, so the difference per seed is far less noisy than either mean (on digits a
seed's test accuracy spreads by 0.006-0.012, the policies' differences by a few thousandths).
This table pairs every configuration with the reference policy's run of the same task and
seed and gives the mean difference in test accuracy and in parameters added, each with a 90%
bootstrap interval over seeds (resampled in pairs), and on how many seeds the configuration was
the more accurate. A "task" is a configuration less its `policy` group and `policy.*` keys, so
a static model of another width is a task of its own and is left out unless the reference
policy ran on it too. `metric="val_accuracy"` compares on validation instead: what choosing
between candidates may look at (test is for the one reading at the end).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

import numpy as np
import yaml

from esper.report.table import _relevant, configured, groups_of, labels

RESAMPLES = 4000
METRICS = ("test_accuracy", "val_accuracy")


def columns(metric: str) -> list[str]:
    """The paired table's header for `metric` (one of METRICS)."""
    return [
        "configuration",
        "seeds",
        f"{metric.replace('_', ' ')} − reference (90% interval)",
        "params added − reference (90% interval)",
        "more accurate on",
    ]


def task_of(run: dict[str, Any]) -> str:
    """The run's configuration less its policy: what two policies must share to be compared."""
    config = {k: v for k, v in _relevant(run["config"]).items() if not k.startswith("policy.")}
    return json.dumps(config, sort_keys=True, default=str)


def interval(differences: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """5th and 95th percentiles of the mean difference when the seeds are resampled (pairs stay
    together: a seed's two runs are drawn as one)."""
    if len(differences) < 2:
        return float(differences.mean()), float(differences.mean())
    picks = rng.integers(0, len(differences), size=(RESAMPLES, len(differences)))
    low, high = np.percentile(differences[picks].mean(axis=1), [5, 95])
    return float(low), float(high)


def estimate(differences: np.ndarray, rng: np.random.Generator, spec: str) -> str:
    """The mean difference and its interval, each formatted with `spec`. One seed has no
    spread to resample: it says so, as the results table does, rather than print an interval
    of zero width that claims a certainty nobody measured."""
    mean = format(differences.mean(), spec)
    if len(differences) < 2:
        return f"{mean} (one seed)"
    low, high = interval(differences, rng)
    return f"{mean} ({format(low, spec)} to {format(high, spec)})"


def settings_of(reference: str) -> tuple[str, dict[str, Any]]:
    """The reference's policy and its `key=value` settings, values read as YAML (`[8, 8]`).
    Raises ValueError naming what is not a setting: a misspelt one would otherwise read as a
    reference that no run matches."""
    if not reference.split():
        raise ValueError("--against: name a policy (random, heuristic, ...)")
    policy, *tokens = _tokens(reference)
    settings = {}
    for token in tokens:
        key, equals, value = token.partition("=")
        if not key or not equals:
            raise ValueError(
                f"--against {reference!r}: {token!r} is not KEY=VALUE (a setting of the "
                "policy's configuration, as policy.patience=1)"
            )
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--against {reference!r}: {token!r}: the value is not YAML") from None
    return policy, settings


def _tokens(reference: str) -> list[str]:
    """The reference's words, split on spaces outside brackets: a label copied from the table
    (`none model.hidden=[12, 12]`) keeps its list whole (it was refused as not YAML)."""
    tokens: list[str] = []
    depth = 0
    for word in reference.split():
        if depth > 0:
            tokens[-1] += " " + word
        else:
            tokens.append(word)
        depth = max(
            0, depth + word.count("[") + word.count("{") - word.count("]") - word.count("}")
        )
    return tokens


def paired_rows(
    runs: list[dict[str, Any]], reference: str, metric: str = "test_accuracy"
) -> list[list[str]]:
    """One row per configuration that shares a task and a seed with the reference; see the
    module docstring. `reference` is a policy (`random`), optionally with the settings that tell
    it apart from other runs of that policy (`heuristic policy.patience=1`). A configuration
    that cannot be paired (no run of it has its configuration, the reference did not run its
    task, no seed in common) is named in one line on stderr. Raises ValueError naming it when no run matches, when it matches more
    than one configuration of a task, or when nothing could be paired with it."""
    policy, settings = settings_of(reference)
    done = [r for r in runs if r["status"] == "completed"]
    groups = groups_of(done)
    names = labels(groups)
    notes = []
    for config_hash in [h for h, members in groups.items() if not configured(members)["config"]]:
        notes.append(
            f"{names[config_hash]}: no run of it has its configuration (events.jsonl missing "
            "or unreadable); not paired"
        )
        del groups[config_hash]

    def is_reference(config_hash: str) -> bool:
        """The policy, and each `key=value` setting equal to the run's configuration (read
        from the configuration, not the label: a label omits what no other row differs in)."""
        first = configured(groups[config_hash])
        if first.get("choices", {}).get("policy") != policy:
            return False
        config = _relevant(first["config"])
        return all(key in config and _same(config[key], v) for key, v in settings.items())

    by_task: dict[str, list[str]] = defaultdict(list)
    for config_hash, members in groups.items():
        by_task[task_of(configured(members))].append(config_hash)
    references = {h for h in groups if is_reference(h)}
    if not references:
        _say(notes)
        used = sorted({r.get("choices", {}).get("policy", "?") for r in done})
        keys = {
            key
            for members in groups.values()
            if configured(members).get("choices", {}).get("policy") == policy
            for key in _relevant(configured(members)["config"])
        }
        unknown = sorted(set(settings) - keys) if keys else []
        if unknown:
            raise ValueError(
                f"--against {reference!r}: no run of {policy} has {', '.join(unknown)} in its "
                "configuration (a misspelt key?)"
            )
        raise ValueError(f"--against {reference!r}: no completed run matches (policies: {used})")
    out = []
    for hashes in by_task.values():
        refs = [h for h in hashes if h in references]
        if len(refs) > 1:
            raise ValueError(
                f"--against {reference!r} matches {len(refs)} configurations of one task "
                f"({'; '.join(names[h] for h in refs)}): add the settings that tell them apart"
            )
        if not refs:  # a task the reference did not run (a static model of another width)
            notes.extend(  # helper-found: these rows vanished without a word
                f"{names[h]}: {reference} did not run its task; not paired" for h in sorted(hashes)
            )
            continue
        ref = _by_seed(groups[refs[0]], metric)
        repeated = sorted(seed for seed, (_, _, n) in ref.items() if n > 1)
        if repeated:  # the last run of a seed replaced the others, without a word
            notes.append(
                f"{names[refs[0]]}: more than one run of seed {', '.join(map(str, repeated))}; "
                "each is paired with their mean"
            )
        for config_hash in set(hashes) - references:  # rows are sorted once, at the end
            pairs = [(r, ref[r["seed"]]) for r in groups[config_hash] if r["seed"] in ref]
            if not pairs:
                notes.append(
                    f"{names[config_hash]}: no seed in common with {reference}; not paired"
                )
                continue
            rng = np.random.default_rng(0)
            accuracy = np.array([a["metrics"][metric] - b[0] for a, b in pairs])
            params = np.array([a["params"]["seeds"] - b[1] for a, b in pairs], float)
            out.append(
                [
                    names[config_hash],
                    str(len(pairs)),
                    estimate(accuracy, rng, "+.4f"),
                    estimate(params, rng, "+,.0f"),
                    f"{int((accuracy > 0).sum())} of {len(pairs)} seeds"
                    f" ({int((accuracy == 0).sum())} tied)",
                ]
            )
    _say(notes)
    if not out:
        raise ValueError(
            f"--against {reference!r}: no configuration shares a task and a seed with it; "
            "nothing to pair"
        )
    return sorted(out)


def _same(configured: Any, wanted: Any) -> bool:
    """A run's setting against one asked for: as numbers where both are (`1` is `1.0`, and
    `1e-3`, a string to YAML, is 0.001), else as text."""
    try:
        return float(configured) == float(wanted)
    except (TypeError, ValueError):
        return str(configured) == str(wanted)


def _by_seed(runs: list[dict[str, Any]], metric: str) -> dict[int, tuple[float, float, int]]:
    """The reference's `metric` and parameters added per seed, each the mean of its runs of
    that seed (runs that differ only in `policy.seed` are one configuration), and how many."""
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_seed[run["seed"]].append(run)
    return {
        seed: (
            float(np.mean([r["metrics"][metric] for r in same])),
            float(np.mean([r["params"]["seeds"] for r in same])),
            len(same),
        )
        for seed, same in by_seed.items()
    }


def _say(notes: list[str]) -> None:
    """What the paired table leaves out and why, one line each, sorted (groups come in no
    order that means anything)."""
    for note in sorted(notes):
        print(f"esper.report: {note}", file=sys.stderr)


def paired_table(runs: list[dict[str, Any]], reference: str, metric: str = "test_accuracy") -> str:
    """The paired table as markdown, headed by the reference it compares against."""
    header = columns(metric)
    lines = [
        f"Against `{reference}`, paired by task and seed:",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in paired_rows(runs, reference, metric)]
    return "\n".join(lines)
