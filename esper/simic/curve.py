"""The learning curve of a policy-training run, rendered from what it logged:
`python -m esper.simic.curve <training run dir> [--out curve.png]`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from esper.simic.train import CURVE_PANELS, load_state

SMOOTH = 10
"""Updates in the moving mean drawn over each panel (one update's mean is a noisy sample)."""


def moving_mean(values: list[float], window: int) -> list[float]:
    """The mean of each window's finite values (explained variance is NaN for an update whose
    returns were all equal)."""
    means = []
    for i in range(window - 1, len(values)):
        finite = [v for v in values[i - window + 1 : i + 1] if math.isfinite(v)]
        means.append(sum(finite) / len(finite) if finite else math.nan)
    return means


def history(run_dir: Path) -> list[dict[str, float]]:
    """What a training run logged, an update a row (from its simic.pt, checked as a resume
    checks it); ValueError in one line for anything else (a policy.pt, a damaged file)."""
    rows = load_state(str(run_dir), str(run_dir), "no curve yet")["history"]
    if not rows:
        raise ValueError(f"{run_dir}: no update was logged yet")
    return list(rows)  # each row checked by load_state: it holds the numbers CURVE_PANELS draws


def render(rows: list[dict[str, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(4 * len(CURVE_PANELS), 3.2))
    updates = [row["update"] + 1 for row in rows]
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        values = [row[key] for row in rows]
        ax.plot(updates, values, marker=".", alpha=0.35, linewidth=0.8)
        if len(values) >= 2 * SMOOTH:
            ax.plot(updates[SMOOTH - 1 :], moving_mean(values, SMOOTH), color="C3")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no update 1.5 (helper-found)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


FORMATS = (".png", ".svg", ".pdf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path, help="the training's directory, or its simic.pt")
    parser.add_argument("--out", type=Path, default=None, help=f"the figure: {', '.join(FORMATS)}")
    args = parser.parse_args(argv)
    # helper-found: given simic.pt itself, the figure was to go inside the file ("File exists")
    folder = args.run_dir.parent if args.run_dir.is_file() else args.run_dir
    out = args.out or folder / "learning_curve.png"
    if out.suffix.lower() not in FORMATS:
        parser.error(f"--out {out}: allowed: a file ending in {', '.join(FORMATS)}")
    try:
        rows = history(args.run_dir)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        print(render(rows, out))
    except OSError as exc:
        parser.error(f"--out {out}: cannot write the figure there ({exc.strerror or exc})")


if __name__ == "__main__":
    main()
