"""Esper's one entrypoint: `python run.py [group=option ...] [key=value ...]`, `-m` to sweep."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

# What a sweeper may optimise: summary.json's train and val metrics. Never test_*: decisions see
# the validation split only, and the test split is evaluated once, at the end, and reported.
OPTIMIZABLE = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def optimized_metric(cfg: DictConfig) -> str:
    """The top-level `optimized_metric`, checked before anything is built (one line if bad)."""
    from esper.config import ConfigError

    name = cfg.get("optimized_metric", "val_accuracy")
    if name not in OPTIMIZABLE:
        raise ConfigError(
            f"optimized_metric={name!r}: a sweep optimises a train or val metric, never test; "
            f"allowed: {', '.join(OPTIMIZABLE)}"
        )
    return str(name)


def print_result(summary: dict) -> None:
    m, p = summary["metrics"], summary["params"]
    print("\n split  |   loss  | accuracy")
    print(" -------+---------+---------")
    for split in ("train", "val", "test"):
        print(f" {split:<6} | {m[f'{split}_loss']:7.4f} | {m[f'{split}_accuracy']:8.4f}")
    f = summary.get("flops_per_sample", {})
    print(
        f"\n params: host {p['host']}, seeds {p['seeds']}, total {p['total']}; forward FLOPs "
        f"a sample: host {f.get('host', 0):,}, total {f.get('total', 0):,}"
    )
    for a in summary["adaptations"]:
        print(
            f"  epoch {a['epoch']:>3}  {a['slot']:<12} {a['from']:>10} -> {a['to']:<10} "
            f"{a['blueprint'] or '-':<14} {a['reason']}"
        )
    for k in summary["kernels"]:
        print(
            f"  kernel {k['kernel_id'][:12]} {k['blueprint']:<14} cache={k['cache']:<4} "
            f"p50={k['latency_us_p50']:.0f}us p95={k['latency_us_p95']:.0f}us "
            f"compile={k['compile_s']:.2f}s"
        )
    print(f" wall {summary['wall_s']:.1f}s; W&B {summary['wandb']['mode']}")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Runs one experiment; returns its `optimized_metric` to the sweeper (Optuna, Ax, ...)."""
    from esper.app import build
    from esper.config import ConfigError

    try:
        metric = optimized_metric(cfg)
        experiment = build(cfg)
    except ConfigError as exc:
        print(f"esper: {exc}", file=sys.stderr)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records this job as failed and goes on with the others
        raise SystemExit(2) from None
    record = experiment.run()  # summary.json's content: a dict, or a pydantic record
    summary = record if isinstance(record, dict) else record.model_dump(mode="json", by_alias=True)
    print_result(summary)
    print(f" outputs: {experiment.run_dir}")
    return float(summary["metrics"][metric])


if __name__ == "__main__":
    sys.exit(main())
