"""wrap() on arbitrary modules: names, globs, types; clear errors at wrap time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import esper
from esper.seeds import SiteError


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.GRU(4, 4, batch_first=True)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        out, _ = self.body(x.unsqueeze(1))
        return out


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.seq = nn.Linear(8, 8)

    def forward(self, x):
        return self.layer2(self.layer1(x))


def test_sites_by_glob_and_by_type() -> None:
    x = torch.randn(2, 3, 6, 6)
    by_glob = esper.wrap(Blocks(), ["layer*.0"], example_input=x)
    assert [s.name for s in by_glob.iter_slots()] == ["layer1.0", "layer2.0"]
    assert [s.shape for s in by_glob.iter_slots()] == [(4, 6, 6), (4, 6, 6)]
    assert [s.name for s in esper.wrap(Blocks(), ["layer*"], x).iter_slots()] == [
        "layer1",
        "layer2",
    ]
    by_type = esper.wrap(Blocks(), [nn.ReLU], example_input=x)
    assert [s.name for s in by_type.iter_slots()] == ["layer1.1", "layer2.1"]
    assert [s.name for s in esper.wrap(Blocks(), ["type:Conv2d"], x).iter_slots()] == [
        "layer1.0",
        "layer2.0",
    ]


def test_sequence_activations_are_slots() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8))
    wrapped = esper.wrap(model, ["1"], example_input=torch.randint(0, 10, (2, 5)))
    slot = next(wrapped.iter_slots())
    assert (slot.shape, slot.kind) == ((5, 8), "sequence")


def test_a_site_that_matches_nothing_is_named_with_what_exists() -> None:
    with pytest.raises(
        SiteError, match=r"'layer3\*' matches no module of Blocks; modules: layer1,"
    ):
        esper.wrap(Blocks(), ["layer3*"], example_input=torch.randn(2, 3, 6, 6))


def test_a_site_with_a_tuple_output_or_never_called_fails_at_wrap_time() -> None:
    with pytest.raises(SiteError, match="body: its output is a tuple, not a single tensor"):
        esper.wrap(TwoHeads(), ["body"], example_input=torch.randn(2, 4))
    with pytest.raises(SiteError, match="unused: it was not called in the forward pass"):
        esper.wrap(TwoHeads(), ["unused"], example_input=torch.randn(2, 4))
    with pytest.raises(SiteError, match=r"seq: it was not called"):
        esper.wrap(Blocks(), ["seq"], example_input=torch.randn(2, 3, 6, 6))
