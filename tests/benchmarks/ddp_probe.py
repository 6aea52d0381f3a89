"""Run by torchrun from test_ddp.py: the cost of broadcasting one control step's decisions
(rank 0's list of `Decision`, pickled by `broadcast_object_list`) to every rank."""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch.distributed as dist

from esper.contracts import Decision
from esper.training.distributed import ranks_from_env

ROUNDS = 500


def main(out: str) -> None:
    ranks = ranks_from_env("ddp", "cpu")
    decisions = [
        Decision(
            action="germinate",
            slot="blocks.0",
            blueprint="residual_mlp",
            reason="gnn: p(action)=0.41, p(slot)=0.77, p(blueprint)=0.66",
            probabilities={"action": 0.41, "slot": 0.77, "blueprint": 0.66, "op/wait": 0.3},
        )
    ]
    times = []
    for _ in range(ROUNDS):
        dist.barrier()
        start = time.perf_counter()
        got = ranks.broadcast(decisions if ranks.rank == 0 else None)
        times.append(time.perf_counter() - start)
        assert got == decisions
    if ranks.rank == 0:
        with open(out, "w") as handle:
            json.dump({"median_us": statistics.median(times) * 1e6, "world": ranks.world}, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
