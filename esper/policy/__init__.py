"""Policies (Tamiyo): observation in, decisions out."""

from typing import TYPE_CHECKING, Any

from esper.policy.base import Policy, slot_choices
from esper.policy.heuristic import HeuristicPolicy
from esper.policy.none import NoPolicy
from esper.policy.random import RandomPolicy

if TYPE_CHECKING:
    from esper.policy.gnn import GnnPolicy

__all__ = ["GnnPolicy", "HeuristicPolicy", "NoPolicy", "Policy", "RandomPolicy", "slot_choices"]


def __getattr__(name: str) -> Any:
    # The GNN policy imports torch_geometric (about 1.8 s a process here, torch._dynamo with
    # it): only where it is asked for (`policy=gnn`'s `_target_: esper.policy.GnnPolicy`)
    if name == "GnnPolicy":
        from esper.policy.gnn import GnnPolicy

        return GnnPolicy
    raise AttributeError(f"module 'esper.policy' has no attribute {name!r}")
