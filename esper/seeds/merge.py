"""Fold a fossilized linear seed into the Linear it follows, so the grown model has no slot left.

Exact only when the seed is a bias-free linear map of the site's output (s(y) = y @ M) and the
site is an nn.Linear: then y + y @ M = x @ (W^T (I + M)) + b (I + M).
"""

from __future__ import annotations

import torch
from torch import nn

from esper import blueprints
from esper.contracts import SeedState
from esper.seeds.slot import SeedSlot


def merge_obstacle(slot: SeedSlot) -> str | None:
    """Why this slot's seed cannot be folded exactly, or None when it can."""
    if slot.seed is None or slot.blueprint is None:
        return "no seed to merge"
    if not blueprints.get(slot.blueprint).linear:
        return f"blueprint {slot.blueprint} is not a linear map"
    if not isinstance(slot.site, nn.Linear):
        return f"site {slot.name} is a {type(slot.site).__name__}, not a Linear"
    return None


@torch.no_grad()
def merge_into_site(slot: SeedSlot) -> int:
    """Fold the seed into the site's weights; returns the parameters removed."""
    obstacle = merge_obstacle(slot)
    if obstacle is not None:
        raise ValueError(f"slot {slot.name}: cannot merge: {obstacle}")
    if slot.state is not SeedState.FOSSILIZED:
        raise ValueError(f"slot {slot.name}: merge needs FOSSILIZED, not {slot.state.value}")
    site = slot.site
    assert isinstance(site, nn.Linear)  # merge_obstacle checked it
    features = site.out_features
    weight = site.weight
    identity = torch.eye(features, dtype=weight.dtype, device=weight.device)
    assert slot.seed is not None  # merge_obstacle checked it
    m = slot.seed(identity)  # row i is s(e_i), so s(y) = y @ m
    fold = identity + m
    site.weight.copy_(fold.T @ weight)
    if site.bias is not None:
        site.bias.copy_(site.bias @ fold)
    removed = sum(p.numel() for p in slot.seed_parameters())
    slot.detach_seed()
    return removed
