"""The registry-wide contract: every blueprint preserves shape, is identity at birth, learns."""

from __future__ import annotations

import pytest
import torch

from esper import blueprints

SHAPES = {"vector": [(8,), (3,)], "image": [(4, 6, 6), (1, 8, 8)], "sequence": [(5, 8)]}

CASES = [
    (name, shape)
    for name in blueprints.names()
    for kind in blueprints.get(name).kinds
    for shape in SHAPES[kind]
]


def test_the_required_blueprints_are_registered() -> None:
    assert {"residual_mlp", "low_rank", "conv_residual", "squeeze_excite"} <= set(
        blueprints.names()
    )


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_shape_preserved_identity_at_birth_and_gradients_flow(name: str, shape) -> None:
    module = blueprints.build(name, shape, seed=3)
    x = torch.randn(4, *shape, requires_grad=True)
    delta = module(x)
    assert delta.shape == x.shape
    assert torch.count_nonzero(delta) == 0, "a seed must add exactly zero at birth"
    (delta * torch.randn_like(delta)).sum().backward()
    grads = [p.grad for p in module.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(torch.count_nonzero(g) > 0 for g in grads), "some parameter must learn"


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_builders_are_pure(name: str, shape) -> None:
    a = blueprints.build(name, shape, seed=7).state_dict()
    b = blueprints.build(name, shape, seed=7).state_dict()
    c = blueprints.build(name, shape, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_unknown_blueprint_and_wrong_kind_and_bad_hparam_are_named() -> None:
    with pytest.raises(KeyError, match="unknown blueprint 'nope'; allowed: residual_mlp"):
        blueprints.build("nope", (4,))
    with pytest.raises(ValueError, match="accepts image activations, not vector"):
        blueprints.build("conv_residual", (4,))
    with pytest.raises(ValueError, match="blueprints.hparams.low_rank.width .*allowed: rank"):
        blueprints.build("low_rank", (4,), {"width": 3})


def test_compatible_filters_by_activation_kind() -> None:
    allowed = ["residual_mlp", "conv_residual", "low_rank"]
    assert blueprints.compatible((8,), allowed) == ("residual_mlp", "low_rank")
    assert blueprints.compatible((2, 4, 4), allowed) == ("conv_residual",)
