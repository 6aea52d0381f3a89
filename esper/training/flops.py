"""Forward FLOPs per sample, so that accuracy is always reported with what it cost to compute."""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from esper.seeds import MorphogeneticModel

CPU_ATTENTION = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
"""What `F.scaled_dot_product_attention` runs on the CPU. torch's counter has a formula for
the GPU kernels of attention and none for it, so attention counted 0 FLOPs here (helper-found:
an `attention` seed's forward FLOPs were its projections' alone, and a transformer host's 23%
short); its GPU formulas are registered for it below (q@k and scores@v; causal masking
not discounted, as torch counts it on the GPU)."""


def _count_cpu_attention() -> None:
    registry = flop_counter.flop_registry
    if CPU_ATTENTION not in registry:
        registry[CPU_ATTENTION] = registry[torch.ops.aten._scaled_dot_product_flash_attention]
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if backward not in registry:
        registry[backward] = registry[torch.ops.aten._scaled_dot_product_flash_attention_backward]


_count_cpu_attention()


def forward_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on `example` (matmuls and convolutions, as torch counts them)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def flops_per_sample(model: MorphogeneticModel, example: torch.Tensor) -> dict[str, int]:
    """The host alone (every slot bypassed) and the grown model, for one sample."""
    sample = example[:1]
    total = forward_flops(model, sample)
    with ExitStack() as stack:
        for slot in model.iter_slots():
            stack.callback(setattr, slot, "bypass", slot.bypass)
            slot.bypass = True
        host = forward_flops(model, sample)
    return {"host": host, "total": total}


def train_step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward on the sample (x, y), counted by
    torch (in eval mode: no dropout draws from the run's random streams; same FLOPs). The
    gradients it leaves are cleared."""
    from esper.training.steps import token_loss

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            token_loss(model(x), y).backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())
