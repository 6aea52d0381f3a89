"""The non-finite guard: every optimizer step is let through only if the loss and every
gradient are finite; it decides whose fault a non-finite step was."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from esper.seeds import SeedSlot
from esper.training.steps import Clock

__all__ = ["Diverged", "StepGuard", "check_weights"]


class Diverged(FloatingPointError):
    """Too many non-finite steps in a row: the host itself diverged."""


def _norm(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The L2 norm of all of them together, without a device sync (zero for none)."""
    if not tensors:
        return torch.zeros((), device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


class StepGuard:
    """A non-finite step is skipped. If a seed's own gradient is non-finite while the host's
    parameters are intact, the seed caused it and is culled at once. Otherwise the host
    diverged: the skip is counted, and `max_nonfinite_steps` skips in a row end the run as
    `diverged`. Also tracks each seed's largest gradient norm (for the gates)."""

    def __init__(self, max_nonfinite_steps: int) -> None:
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.skipped_steps = 0

    def check(
        self,
        loss: torch.Tensor,
        active: list[SeedSlot],
        host_params: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        cull: Callable[[SeedSlot, str], None],
        clock: Clock,
    ) -> bool:
        """Whether the optimizer may step; a non-finite step's gradients are cleared."""
        seed_norms = []
        for slot in active:
            norm = _norm(slot.seed_gradients(), loss.device)
            life = slot.life
            life.grad_norm_max = (
                norm.detach()
                if isinstance(life.grad_norm_max, float)
                else torch.maximum(life.grad_norm_max, norm.detach())
            )
            seed_norms.append(norm)
        host_grads = [p.grad for p in host_params if p.grad is not None]
        checked = torch.stack([loss.detach(), _norm(host_grads, loss.device), *seed_norms])
        if bool(torch.isfinite(checked).all()):
            self.nonfinite_in_a_row = 0
            return True
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        step = clock.step
        culprits = [(s, n.item()) for s, n in zip(active, seed_norms) if not torch.isfinite(n)]
        host_intact = bool(torch.isfinite(_norm(list(host_params), loss.device)))
        if culprits and host_intact:
            for slot, value in culprits:
                cull(slot, f"non-finite seed gradient (norm {value}) at step {step}")
            return False
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise Diverged(
                f"the host diverged: {self.nonfinite_in_a_row} steps in a row with a non-finite "
                f"loss or gradient, skipped (last at step {step}, loss {loss.item()}); lower "
                "trainer.optimizer.lr or raise trainer.max_nonfinite_steps"
            )
        return False


def check_weights(model: torch.nn.Module, epoch: int, earlier_checkpoint: bool) -> None:
    """Before a checkpoint: a step whose loss and gradients were finite can still overflow the
    weights (a learning rate of 1e38); such a model is not saved over the last good one, which
    a resume would then continue. Every rank checks (their weights are equal under ddp)."""
    finite = [torch.isfinite(p).all() for p in model.parameters()]
    if finite and not bool(torch.stack(finite).all()):
        kept = "the checkpoint before it is kept" if earlier_checkpoint else "no checkpoint"
        raise Diverged(
            f"the host diverged: its weights are not finite after epoch {epoch} (an update "
            f"overflowed them); {kept}; lower trainer.optimizer.lr or the scheduler's rates"
        )
