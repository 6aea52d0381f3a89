"""The learning curve of a policy-training run, rendered from what it logged:
`python -m esper.simic.curve <training run dir> [--out curve.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

PANELS = (
    ("episode/return", "mean episode reward"),
    ("episode/val_gain", "val accuracy over the host alone"),
    ("loss/explained_variance", "value head: explained variance"),
    ("loss/entropy", "policy entropy"),
)


def history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir if run_dir.is_file() else run_dir / "simic.pt"
    return list(torch.load(path, map_location="cpu", weights_only=True)["history"])


def render(rows: list[dict[str, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    updates = [row["update"] + 1 for row in rows]
    for ax, (key, title) in zip(axes, PANELS):
        ax.plot(updates, [row[key] for row in rows], marker=".")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or args.run_dir / "learning_curve.png"
    print(render(history(args.run_dir), out))


if __name__ == "__main__":
    main()
