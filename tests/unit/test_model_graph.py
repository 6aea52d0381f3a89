"""The model graph: built once at wrap time from torch.fx (or forward-hook order where the host
does not trace), one node per leaf module and per slot, edges along the data; its features are
rewritten in place at each control step."""

from __future__ import annotations

import torch
from torch import nn

import esper
from esper.contracts import Observation, SeedState, SiteStats, SlotObservation
from esper.models import CNN, MLP, ResNetSmall, TransformerTiny
from esper.seeds.graph_features import GLOBAL_FEATURES, N_NODE, NODE_FEATURES


def edges(model) -> set[tuple[str, str]]:
    spec = model.graph.spec
    return {(spec.nodes[a], spec.nodes[b]) for a, b in spec.edges}


def test_mlp_graph_follows_the_forward_order() -> None:
    model = esper.wrap(MLP((2,), 2, hidden=[8, 8]), ["blocks.0", "blocks.1"], torch.randn(2, 2))
    graph = model.graph
    assert graph.source == "fx"
    assert graph.spec.nodes == [
        "blocks.0.0",
        "blocks.0.1",
        "blocks.1.0",
        "blocks.1.1",
        "head",
        "slot:blocks.0",
        "slot:blocks.1",
    ]
    assert edges(model) == {
        ("blocks.0.0", "blocks.0.1"),
        ("blocks.0.1", "blocks.1.0"),
        ("blocks.1.0", "blocks.1.1"),
        ("blocks.1.1", "head"),
        ("blocks.0.1", "slot:blocks.0"),
        ("slot:blocks.0", "blocks.1.0"),
        ("blocks.1.1", "slot:blocks.1"),
        ("slot:blocks.1", "head"),
    }
    assert graph.data.edge_index.shape == (2, 16), "both directions"
    assert graph.data.x.shape == (7, N_NODE) and graph.data.u.shape == (1, len(GLOBAL_FEATURES))
    assert graph.data.slot_index.tolist() == [5, 6]


def test_cnn_and_resnet_graphs_put_each_slot_after_its_site() -> None:
    cnn = esper.wrap(
        CNN((1, 8, 8), 10, channels=[8, 16]), ["blocks.0", "blocks.1"], torch.randn(2, 1, 8, 8)
    )
    assert ("slot:blocks.1", "pool") in edges(cnn) and len(cnn.graph.spec.nodes) == 8
    resnet = esper.wrap(
        ResNetSmall((3, 32, 32), 10, widths=[16, 32, 64]),
        ["layer1", "layer2", "layer3"],
        torch.randn(2, 3, 32, 32),
    )
    found = edges(resnet)
    # the residual sum is a node of its own (a merge); the slot sits after it
    assert {
        ("layer1.bn2", "op:add"),
        ("layer1.shortcut", "op:add"),
        ("op:add", "slot:layer1"),
    } <= found
    assert {("slot:layer1", "layer2.conv1"), ("slot:layer1", "layer2.shortcut.0")} <= found
    assert len(resnet.graph.spec.nodes) == 22 + 3 + 3, "leaf modules, residual adds, slots"


def test_transformer_graph_follows_the_residual_stream() -> None:
    model = esper.wrap(
        TransformerTiny((32,), 50, width=32, depth=2, heads=2),
        ["blocks.*"],
        torch.randint(0, 50, (2, 32)),
    )
    found = edges(model)
    spec = model.graph.spec
    merges = [n for n in spec.nodes if n.startswith("op:")]
    assert merges == [
        "op:add",
        "op:scaled_dot_product_attention",
        "op:add_1",
        "op:add_2",
        "op:scaled_dot_product_attention_1",
        "op:add_3",
        "op:add_4",
    ], "token + position, attention, and two residual adds a block; reshapes are not merges"
    assert {("blocks.0.attn.proj", "op:add_1"), ("blocks.0.mlp.2", "op:add_2")} <= found
    assert {("op:add_2", "slot:blocks.0"), ("slot:blocks.0", "blocks.1.ln1")} <= found
    assert ("slot:blocks.1", "ln") in found
    assert len(spec.edges) < 3 * len(spec.nodes), "a residual stream stays a chain"


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        h = self.layer1(x)
        if h.sum() > 0:
            h = h * 1.0
        return self.out(self.layer2(h))


def test_an_untraceable_user_model_wrapped_by_glob_falls_back_to_hook_order() -> None:
    model = esper.wrap(Untraceable(), ["layer*"], torch.randn(2, 4))
    graph = model.graph
    assert graph.source == "hooks"
    assert graph.spec.nodes == [
        "layer1.0",
        "layer1.1",
        "slot:layer1",
        "layer2.0",
        "layer2.1",
        "slot:layer2",
        "out",
    ]
    assert edges(model) == {
        ("layer1.0", "layer1.1"),
        ("layer1.1", "slot:layer1"),
        ("layer1.1", "layer2.0"),
        ("slot:layer1", "layer2.0"),
        ("layer2.0", "layer2.1"),
        ("layer2.1", "slot:layer2"),
        ("layer2.1", "out"),
        ("slot:layer2", "out"),
    }


def test_sites_granularity_keeps_only_the_slots() -> None:
    model = esper.wrap(
        MLP((2,), 2, hidden=[8, 8]), ["blocks.0", "blocks.1"], torch.randn(2, 2), graph="sites"
    )
    assert model.graph.spec.nodes == ["slot:blocks.0", "slot:blocks.1"]
    assert (
        esper.wrap(MLP((2,), 2, hidden=[8]), ["blocks.0"], torch.randn(2, 2), graph=None).graph
        is None
    )


def observation(state: SeedState, grad: float) -> Observation:
    slots = tuple(
        SlotObservation(
            name=n,
            kind="vector",
            shape=(8,),
            state=state,
            alpha=0.5,
            stats=SiteStats(activation_mean=0.1, activation_std=1.0, grad_norm=grad),
            contribution_accuracy=0.02 if state is SeedState.BLENDING else None,
            tried={"low_rank": 1},
        )
        for n in ("blocks.0", "blocks.1")
    )
    return Observation(
        epoch=3,
        max_epochs=10,
        train_loss=0.5,
        train_accuracy=0.8,
        val_loss=0.6,
        val_accuracy=0.7,
        val_loss_history=(0.9, 0.8, 0.7, 0.6),
        slots=slots,
        allowed_blueprints={"blocks.0": ("low_rank",), "blocks.1": ("low_rank",)},
    )


def test_features_are_written_in_place_and_only_slot_rows_change() -> None:
    model = esper.wrap(MLP((2,), 2, hidden=[8, 8]), ["blocks.0", "blocks.1"], torch.randn(2, 2))
    data = model.graph.data
    tensors = (data.x, data.u, data.edge_index, data.slot_index)
    pointers = [t.data_ptr() for t in tensors]
    modules_before = data.x[:5].clone()
    model.graph.update(observation(SeedState.BLENDING, 2.0), {"blocks.0": 64}, {"blocks.0": 30.0})
    assert [t.data_ptr() for t in (data.x, data.u, data.edge_index, data.slot_index)] == pointers
    assert all(a is b for a, b in zip(tensors, (data.x, data.u, data.edge_index, data.slot_index)))
    assert torch.equal(data.x[:5], modules_before), "module rows are static"
    col = {name: i for i, name in enumerate(NODE_FEATURES)}
    slot0 = data.x[5]
    assert slot0[col["state_blending"]] == 1 and slot0[col["alpha"]] == 0.5
    assert slot0[col["contribution_measured"]] == 1 and slot0[col["seed_share"]] > 0
    assert data.u[0, 0] == 3 / 10
    model.graph.update(observation(SeedState.DORMANT, float("nan")), {}, {})
    assert torch.isfinite(data.x).all() and data.x[5, col["state_dormant"]] == 1
