"""Pick a GNN checkpoint by validation only: `python experiments/select_checkpoint.py <sweep>`.

The sweep (experiments/select_checkpoint.sh) runs `random` and each candidate checkpoint on
every task of the honest table over selection seeds 50..59 (neither the training seeds 100..105
nor the evaluation seeds 0..19). A candidate scores one point per task where its mean val
accuracy beats random's and its mean added parameters do not exceed random's (the acceptance
bar, read on validation). Ties go to the larger smallest margin over random (the bar must hold
on every task, so the weakest task decides), then to the higher mean val accuracy. Test is not
read here.

Ten seeds, not five: with five, random's mean val on spirals [8,8] came out 0.614 on the
selection seeds and its test mean 0.695 on the evaluation seeds (a spread of 0.07-0.09 a seed),
so a bar read on five seeds said little about the next five.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from esper.report import load_runs


def main(sweep: Path) -> None:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in load_runs([sweep]):
        model = run["config"]["model"]
        shape = model.get("hidden") or model.get("channels")
        task = f"{run['choices']['dataset']}/{run['choices']['model']}{shape}"
        policy = run["config"]["policy"]
        who = Path(str(policy.get("checkpoint"))).name if "checkpoint" in policy else "random"
        cells[(task, who)].append(run)
    tasks = sorted({t for t, _ in cells})
    candidates = sorted({w for _, w in cells} - {"random"})

    def mean(task: str, who: str, key: str) -> float:
        runs = cells[(task, who)]
        if key == "params":
            return statistics.mean(r["params"]["seeds"] for r in runs)
        return statistics.mean(r["metrics"]["val_accuracy"] for r in runs)

    print("| candidate | " + " | ".join(tasks) + " | score | smallest margin | mean val |")
    print("|---|" + "---|" * (len(tasks) + 3))
    scores: dict[str, tuple[int, float, float]] = {}
    for who in candidates:
        cells_text, score, vals, margins = [], 0, [], []
        for task in tasks:
            val, params = mean(task, who, "val"), mean(task, who, "params")
            rval, rparams = mean(task, "random", "val"), mean(task, "random", "params")
            ok = val > rval and params <= rparams
            score += ok
            vals.append(val)
            margins.append(val - rval)
            cells_text.append(
                f"{val:.4f}/{params:.0f} vs {rval:.4f}/{rparams:.0f}{' ✓' if ok else ''}"
            )
        overall, weakest = statistics.mean(vals), min(margins)
        scores[who] = (score, weakest, overall)
        print(
            f"| {who} | "
            + " | ".join(cells_text)
            + f" | {score} | {weakest:+.4f} | {overall:.4f} |"
        )
    best = max(scores, key=lambda w: scores[w])
    print(f"\nselected by validation: {best}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
