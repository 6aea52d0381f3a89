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
    gap = _linearity_gap(slot.seed, slot.site.out_features)
    if gap > LINEAR_TOLERANCE:
        return (
            f"blueprint {slot.blueprint} is declared linear, but its seed is not a linear map "
            f"(s(y) differs from y @ s(I) by up to {gap:.3g}: a bias, or an activation)"
        )
    return None


LINEAR_TOLERANCE = 1e-4
"""How far, relative to the outputs' scale, a seed's outputs may be from the linear map the
merge folds in (float32 rounding of a low-rank product is about 1e-7)."""


@torch.no_grad()
def _linearity_gap(seed: nn.Module, features: int) -> float:
    """The largest gap, relative to the outputs' scale, between the seed on probe rows and the
    map the merge would fold in (`y @ s(I)`). A blueprint declared `linear` is taken at its
    word no more (helper-found: a user's low-rank pair with biases, declared linear, was folded
    in and changed the model's outputs by 2.65). Its own generator: the run's random streams
    are untouched."""
    probe = torch.randn(8, features, generator=torch.Generator().manual_seed(0))
    weight = next(iter(seed.parameters()), None)
    if weight is not None:
        probe = probe.to(weight.device, weight.dtype)
    m = seed(torch.eye(features, dtype=probe.dtype, device=probe.device))
    direct, folded = seed(probe), probe @ m
    scale = max(1.0, float(direct.abs().max()), float(folded.abs().max()))
    return float((direct - folded).abs().max()) / scale


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
