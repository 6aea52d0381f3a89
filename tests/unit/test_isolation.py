"""The forward and gradient semantics of each slot state, checked bitwise against the host."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

import esper
from esper.blueprints import build
from esper.models import CNN, MLP
from esper.seeds import MorphogeneticModel


def wrapped_mlp(seed: int = 0) -> tuple[MLP, MorphogeneticModel]:
    torch.manual_seed(seed)
    host = MLP((2,), 3, [8, 8])
    reference = copy.deepcopy(host)
    model = esper.wrap(host, ["blocks.0", "blocks.1"], example_input=torch.randn(2, 2))
    return reference, model


def start_seed(model: MorphogeneticModel, site: str, blueprint: str, seed: int = 1):
    slot = model.slot(site)
    slot.germinate(blueprint)
    module = build(blueprint, slot.shape, seed=seed)
    # Give the seed non-zero output so that isolation is tested with a seed that does something.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    slot.attach(module, "k" * 64)
    slot.start_training()
    return slot


def test_all_dormant_model_is_the_host_bitwise() -> None:
    reference, model = wrapped_mlp()
    x = torch.randn(16, 2)
    assert torch.equal(model(x), reference(x))


def test_training_stage_forward_and_host_gradients_are_bitwise_the_hosts() -> None:
    reference, model = wrapped_mlp()
    slot = start_seed(model, "blocks.0", "residual_mlp")
    host_opt = torch.optim.Adam(model.host.parameters(), lr=1e-2)
    seed_opt = torch.optim.Adam(slot.seed_parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    seed_before = [p.detach().clone() for p in slot.seed_parameters()]
    for _ in range(5):
        x = torch.randn(32, 2, generator=generator)
        y = torch.randint(0, 3, (32,), generator=generator)
        out, ref_out = model(x), reference(x)
        assert torch.equal(out, ref_out)
        F.cross_entropy(out, y).backward()
        F.cross_entropy(ref_out, y).backward()
        for (name, p), q in zip(model.host.named_parameters(), reference.parameters()):
            assert torch.equal(p.grad, q.grad), name
        for opt in (host_opt, seed_opt, ref_opt):
            opt.step()
            opt.zero_grad()
    for p, q in zip(model.host.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    moved = [not torch.equal(a, b) for a, b in zip(seed_before, slot.seed_parameters())]
    assert all(moved), "the seed learns from dL/dx while isolated"


def test_training_stage_isolation_for_image_activations() -> None:
    torch.manual_seed(0)
    host = CNN((1, 8, 8), 10, [4, 6])
    reference = copy.deepcopy(host)
    model = esper.wrap(host, ["blocks.0", "blocks.1"], example_input=torch.randn(2, 1, 8, 8))
    start_seed(model, "blocks.1", "conv_residual")
    x = torch.randn(4, 1, 8, 8)
    out, ref = model(x), reference(x)
    assert torch.equal(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    for p, q in zip(model.host.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_alpha_zero_is_the_host_and_alpha_one_adds_the_seed() -> None:
    reference, model = wrapped_mlp()
    slot = start_seed(model, "blocks.1", "residual_mlp")
    slot.start_blending(steps=2)
    model.eval()  # no ramp step in eval: alpha stays where it is
    x = torch.randn(8, 2)
    assert slot.alpha == 0.0
    assert torch.equal(model(x), reference(x))

    slot.alpha = 1.0
    hidden = reference.blocks[1](reference.blocks[0](x))
    expected = reference.head(hidden + slot.seed(hidden))
    assert torch.equal(model(x), expected)
    assert not torch.equal(model(x), reference(x))


def test_alpha_ramps_once_per_training_step() -> None:
    _, model = wrapped_mlp()
    slot = start_seed(model, "blocks.0", "residual_mlp")
    slot.start_blending(steps=4)
    model.train()
    alphas = []
    for _ in range(6):
        model(torch.randn(2, 2))
        alphas.append(slot.alpha)
    assert alphas == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_bypass_turns_a_fossilized_seed_off() -> None:
    reference, model = wrapped_mlp()
    slot = start_seed(model, "blocks.0", "residual_mlp")
    slot.start_blending(steps=1)
    slot.fossilize()
    x = torch.randn(8, 2)
    assert not torch.equal(model(x), reference(x))
    slot.bypass = True
    assert torch.equal(model(x), reference(x))


def test_training_stage_isolation_for_sequence_activations() -> None:
    from esper.models import TransformerTiny

    torch.manual_seed(0)
    host = TransformerTiny((12,), 20, width=16, depth=2, heads=2)
    reference = copy.deepcopy(host)
    ids = torch.randint(0, 20, (3, 12))
    model = esper.wrap(host, ["blocks.*"], example_input=ids)
    assert [s.kind for s in model.iter_slots()] == ["sequence", "sequence"]
    start_seed(model, "blocks.0", "attention")
    out, ref = model(ids), reference(ids)
    assert torch.equal(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    for p, q in zip(model.host.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_a_wrapped_causal_host_stays_causal_with_an_attention_seed() -> None:
    from esper.models import TransformerTiny

    torch.manual_seed(0)
    host = TransformerTiny((10,), 20, width=16, depth=1, heads=2)
    ids = torch.randint(0, 20, (2, 10))
    model = esper.wrap(host, ["blocks.0"], example_input=ids)
    slot = start_seed(model, "blocks.0", "attention")
    slot.start_blending(steps=1)
    slot.fossilize()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 20
    before, after = model(ids), model(changed)
    assert torch.equal(before[:, :6], after[:, :6]), "no future token reaches an earlier output"
    assert not torch.equal(before[:, 6:], after[:, 6:])
