from __future__ import annotations

import torch
from torch import nn

from esper.training.optim import add_group, group_names, remove_group


def test_seed_groups_join_and_leave_with_scheduler_kept_aligned() -> None:
    host, seed_a, seed_b = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    opt = torch.optim.Adam([{"params": host.parameters(), "name": "host"}], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    add_group(opt, sched, "seed:a", list(seed_a.parameters()), lr=0.2)
    add_group(opt, sched, "seed:b", list(seed_b.parameters()))
    assert group_names(opt) == ["host", "seed:a", "seed:b"]
    (host.weight.sum() + seed_a.weight.sum() + seed_b.weight.sum()).backward()
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1, 0.05]
    assert seed_a.weight in opt.state
    assert remove_group(opt, sched, "seed:a") == 6
    assert seed_a.weight not in opt.state
    assert group_names(opt) == ["host", "seed:b"]
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.025, 0.025]
    assert len(sched.base_lrs) == 2
