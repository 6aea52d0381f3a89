"""Policies (Tamiyo): observation in, decisions out."""

from esper.policy.base import Policy, slot_choices
from esper.policy.gnn import GnnPolicy
from esper.policy.heuristic import HeuristicPolicy
from esper.policy.none import NoPolicy
from esper.policy.random import RandomPolicy

__all__ = ["GnnPolicy", "HeuristicPolicy", "NoPolicy", "Policy", "RandomPolicy", "slot_choices"]
