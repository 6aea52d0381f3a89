"""wrap() on arbitrary modules: names, globs, types; clear errors at wrap time."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import esper
from esper.seeds import ProbeFailed, SiteError


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


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_wrap_keeps_each_modules_own_training_mode() -> None:
    """helper-found: the probe restored the host's mode recursively, so a BatchNorm the user
    had frozen in eval came back training (its running statistics then moved)."""
    host = Frozen().train()
    host.bn.eval()
    esper.wrap(host, ["fc"], example_input=torch.randn(2, 4))
    assert host.training and not host.bn.training


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


def test_a_site_called_twice_in_one_forward_is_refused() -> None:
    """helper-found: a seed ran at each call, and its blend ramp moved once a call."""
    with pytest.raises(SiteError, match=r"fc: it is called 2 times in one forward"):
        esper.wrap(Twice(), ["fc"], example_input=torch.randn(2, 4))


@pytest.mark.parametrize(
    ("make_host", "sites", "said"),
    [
        (lambda: esper.wrap(Frozen(), ["fc"], torch.randn(2, 4)), ["host.fc"], "wrapped already"),
        (lambda: torch.compile(Frozen(), backend="eager"), ["_orig_mod.fc"], "torch.compile'd"),
        (lambda: Frozen().double(), ["fc"], "parameters are float64; seeds are float32"),
        (Frozen, "fc", r"sites='fc': a list of module names"),
        (Frozen, [0], r"sites: 0 is not a module name, glob or nn.Module type"),
    ],
    ids=["wrapped-twice", "compiled", "float64", "a-string", "an-int"],
)
def test_what_wrap_cannot_work_with_is_one_line(make_host, sites, said) -> None:
    """helper-found: each was a raw torch or Python error, or (compiled) seeds never run."""
    with pytest.raises(SiteError, match=said):
        esper.wrap(make_host(), sites, example_input=torch.randn(2, 4))


def test_an_input_the_host_refuses_names_the_input_and_the_hosts_error() -> None:
    with pytest.raises(ProbeFailed, match=r"cannot take example_input \(float32 \[3, 5\]\)") as e:
        esper.wrap(Frozen(), ["fc"], example_input=torch.randn(3, 5))
    assert isinstance(e.value.__cause__, RuntimeError), "the host's own error, kept"


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a

    def forward(self, x):
        return self.a(x)


def test_a_site_named_by_a_modules_second_name_says_its_first() -> None:
    """helper-found: `'b' matches no module; modules: a`, without saying `b` is `a`."""
    with pytest.raises(SiteError, match=r"'b' is the module 'a' under a second name"):
        esper.wrap(Tied(), ["b"], example_input=torch.randn(2, 4))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Frozen()
        self.head = nn.Linear(4, 4)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize(
    ("part", "sites"),
    [("host", ["body.fc"]), ("host", ["head"]), ("host", ["body"]), ("body", ["fc"])],
    ids=["its-host-same-site", "its-host-another-site", "the-sites-parent", "a-module-of-it"],
)
def test_a_wrapped_models_host_is_not_wrapped_again_while_that_model_lives(part, sites) -> None:
    """helper-found: `esper.wrap(model.host, ...)` was accepted, and once both models had a
    seed at one site, each seed ran in the other's forward too; then the same for a site's
    parent, or another site of the host (the first model's seed changed the second's
    outputs)."""
    first = esper.wrap(Nested(), ["body.fc"], example_input=torch.randn(2, 4))
    target = first.host if part == "host" else first.host.body
    with pytest.raises(SiteError, match=r"esper\.wrap: \S*fc of this host carries a seed slot"):
        esper.wrap(target, sites, example_input=torch.randn(2, 4))
    host = first.host
    del first
    gc.collect()
    again = esper.wrap(host, sites if part == "host" else ["body.fc"], torch.randn(2, 4))
    assert len(list(again.iter_slots())) == 1, "the other is gone"
