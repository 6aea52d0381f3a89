"""Training with the W&B logger on vs `logger=none`: the epoch (its steps, evaluation, control
step, and the flush of its events to events.jsonl and W&B), target <= 1.03x. The two runs
alternate epoch by epoch so that machine drift hits both alike."""

from __future__ import annotations

import statistics
import time

import torch

from esper.app import build

TARGET = 1.03
EPOCHS = 40


def test_epoch_time_with_wandb_vs_without(make_config, tmp_path) -> None:
    torch.set_num_threads(1)
    common = ("trainer.checkpoint=false", f"trainer.max_epochs={EPOCHS}", "policy=random")
    with_wandb = build(make_config(*common, "logger=wandb", run_dir=tmp_path / "wandb"))
    without = build(make_config(*common, "logger=none", run_dir=tmp_path / "none"))
    ratios, wandb_ms, none_ms = [], [], []
    try:
        for epoch in range(EPOCHS):
            order = (with_wandb, without) if epoch % 2 == 0 else (without, with_wandb)
            took = {}
            for experiment in order:
                start = time.perf_counter()
                experiment.trainer.run_epoch(epoch)
                took[id(experiment)] = time.perf_counter() - start
            if epoch >= 5:  # the first epochs compile kernels
                ratios.append(took[id(with_wandb)] / took[id(without)])
                wandb_ms.append(took[id(with_wandb)] * 1e3)
                none_ms.append(took[id(without)] * 1e3)
    finally:
        with_wandb.discard()
        without.discard()
    ratio = statistics.median(ratios)
    steps = len(with_wandb.trainer.data.train)
    print(
        f"\nepoch: W&B {statistics.median(wandb_ms):.2f} ms, none "
        f"{statistics.median(none_ms):.2f} ms ({steps} steps an epoch); ratio {ratio:.4f}"
    )
    assert ratio <= TARGET
