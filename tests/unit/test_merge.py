"""A fossilized low_rank seed folded into the Linear it follows gives the same outputs."""

from __future__ import annotations

import copy

import pytest
import torch

import esper
from esper.blueprints import build
from esper.models import MLP
from esper.seeds import merge_into_site, merge_obstacle


@esper.blueprints.register("affine_declared_linear_for_test", kinds=("vector",), linear=True)
def affine_declared_linear(shape: tuple[int, ...], rank: int = 2) -> torch.nn.Module:
    """A user's low-rank pair with biases, declared linear: an affine map."""
    return torch.nn.Sequential(torch.nn.Linear(shape[-1], rank), torch.nn.Linear(rank, shape[-1]))


def grown(site: str, blueprint: str):
    torch.manual_seed(0)
    model = esper.wrap(MLP((4,), 3, [8, 8]), [site], example_input=torch.randn(2, 4))
    slot = model.slot(site)
    slot.germinate(blueprint)
    module = build(blueprint, slot.shape, seed=1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    slot.attach(module, "k" * 64)
    slot.start_training()
    slot.start_blending(steps=1)
    slot.fossilize()
    return model, slot


def test_low_rank_merges_exactly_into_a_linear_site() -> None:
    model, slot = grown("blocks.0.0", "low_rank")
    x = torch.randn(32, 4)
    before = model(x).detach()
    host_params = sum(p.numel() for p in model.host.parameters())
    assert merge_obstacle(slot) is None
    assert merge_into_site(slot) == 2 * 4 * 8
    assert slot.seed is None and slot.merged and not slot._site[0]._forward_hooks
    after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    unwrapped = copy.deepcopy(model.host)
    torch.testing.assert_close(unwrapped(x), before, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in model.host.parameters()) == host_params


@pytest.mark.parametrize(
    ("site", "blueprint", "why"),
    [
        ("blocks.0", "low_rank", "site blocks.0 is a Sequential, not a Linear"),
        ("blocks.0.0", "residual_mlp", "blueprint residual_mlp is not a linear map"),
        (
            "blocks.0.0",
            "affine_declared_linear_for_test",
            "blueprint affine_declared_linear_for_test is declared linear, but its seed is not "
            "a linear map",
        ),
    ],
)
def test_merge_refuses_what_is_not_exact(site: str, blueprint: str, why: str) -> None:
    _, slot = grown(site, blueprint)
    assert str(merge_obstacle(slot)).startswith(why)
    with pytest.raises(ValueError, match=why):
        merge_into_site(slot)
