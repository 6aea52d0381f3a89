"""What the ranks agree on in the step's one all-reduce, on a real two-process gloo group:
the stop (a signal that reached one rank), and the gradient of a batch one rank had no slice
of (a last batch smaller than the ranks)."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from esper.training.distributed import Ranks


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        ranks = Ranks(rank, 2)
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        unused = nn.Parameter(torch.ones(2))  # in no forward: keeps no gradient
        x, y = torch.randn(1, 3), torch.tensor([1])
        mine_x, mine_y = ranks.shard(x, y)  # rank 0 the one row, rank 1 nothing
        if len(mine_y):
            loss = nn.functional.cross_entropy(model(mine_x), mine_y)
            loss.backward()
        else:
            loss = torch.zeros(())
        params = [*model.parameters(), unused]
        # rank 1 got SIGTERM during the step; rank 0 none
        step_loss, stop = ranks.reduce_step(
            loss, len(mine_y), params, int(signal.SIGTERM) if rank == 1 else None
        )
        (seen,), stop_at_end = ranks.sum(
            [float(len(mine_y))], int(signal.SIGINT) if rank == 0 else None
        )
        torch.save(
            {
                "loss": step_loss,
                "stop": stop,
                "stop_at_end": stop_at_end,
                "seen": seen,
                "grads": [p.grad for p in params],
            },
            f"{out}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_the_ranks_agree_on_the_stop_and_on_a_batch_one_had_no_slice_of(tmp_path: Path) -> None:
    mp.start_processes(
        _rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    zero, one = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(1, 3), torch.tensor([1])
    alone = nn.functional.cross_entropy(model(x), y)
    alone.backward()
    for result in (zero, one):
        assert result["stop"] == signal.SIGTERM, "rank 0 stops with rank 1's signal"
        assert result["stop_at_end"] == signal.SIGINT, "and rank 1 with rank 0's at the sum"
        assert result["seen"] == 1.0
        assert torch.equal(result["loss"], alone.detach()), "the one row's loss, not NaN"
        *grads, unused = result["grads"]
        for got, expected in zip(grads, (p.grad for p in model.parameters()), strict=True):
            assert torch.equal(got, expected)
        assert unused is None, "a parameter no rank computed keeps no gradient"
