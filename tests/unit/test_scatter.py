"""The scatter primitive of the GNN policy: a naive reference, both backends equal (outputs and
gradients), and the measured per-reduction choice with its on-disk cache."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from esper.policy.scatter import (
    REDUCTIONS,
    SETTING_KEY,
    scatter,
    torch_scatter_status,
)
from esper.policy.scatter_choice import ScatterBackends, bucket

CPU = torch.device("cpu")
# Small and quick: a measurement here is a handful of microsecond calls.
QUICK = {"calls": 5, "warmup": 1, "budget_s": 0.2}


def graph(
    edges: int, nodes: int, features: int, seed: int, empty: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random edge rows and their target nodes; the last `empty` nodes receive no edge."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(edges, features, generator=gen, dtype=torch.float64)
    index = torch.randint(0, max(1, nodes - empty), (edges,), generator=gen)
    return src, index


def reference(src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str) -> torch.Tensor:
    """One node at a time, from the definition."""
    rows = []
    for node in range(dim_size):
        members = src[index == node]
        if len(members) == 0:
            rows.append(torch.zeros(src.shape[1], dtype=src.dtype))
        elif reduce == "sum":
            rows.append(members.sum(0))
        elif reduce == "mean":
            rows.append(members.mean(0))
        else:
            rows.append(members.max(0).values)
    return torch.stack(rows)


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize(("edges", "nodes", "empty"), [(40, 12, 3), (1, 5, 4), (0, 4, 4)])
def test_torch_backend_matches_the_reference(reduce, edges, nodes, empty) -> None:
    src, index = graph(edges, nodes, 6, seed=edges + nodes, empty=empty)
    out = scatter(src, index, nodes, reduce, "torch")
    torch.testing.assert_close(out, reference(src, index, nodes, reduce))
    assert out[nodes - empty :].eq(0).all()


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_torch_backend_gradients_match_the_reference(reduce) -> None:
    src, index = graph(50, 10, 4, seed=1, empty=2)
    grad = torch.randn(10, 4, dtype=torch.float64)
    a = src.clone().requires_grad_(True)
    b = src.clone().requires_grad_(True)
    scatter(a, index, 10, reduce, "torch").backward(grad)
    reference(b, index, 10, reduce).backward(grad)
    torch.testing.assert_close(a.grad, b.grad)


def test_torch_max_gradient_splits_ties_like_autograds_own() -> None:
    """The lean backward of the torch backend's max equals autograd's `scatter_reduce` backward,
    ties included (integer-valued rows tie often), and passes gradcheck. (Values avoid 0: see
    the next test.)"""
    gen = torch.Generator().manual_seed(5)
    src = torch.randint(1, 4, (60, 5), generator=gen).double()
    index = torch.randint(0, 9, (60,), generator=gen)  # node 9 stays empty
    grad = torch.randn(10, 5, dtype=torch.float64, generator=gen)
    ours = src.clone().requires_grad_(True)
    theirs = src.clone().requires_grad_(True)
    out = scatter(ours, index, 10, "max", "torch")
    out.backward(grad)
    expected = torch.zeros(10, 5, dtype=torch.float64).scatter_reduce(
        0, index.view(-1, 1).expand(-1, 5), theirs, "amax", include_self=False
    )
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(ours.grad, theirs.grad)
    distinct = torch.randperm(60 * 5, generator=gen).double().view(60, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: scatter(x, index, 10, "max", "torch"), (distinct,))


def test_torch_max_passes_the_whole_gradient_when_the_maximum_is_zero() -> None:
    """Autograd's own `scatter_reduce(amax, include_self=False)` backward (torch 2.13) counts the
    excluded zero initial value as a tie when a segment's maximum is 0 (common after a ReLU) and
    drops that share of the gradient; ours splits it between the tied rows only."""
    src = torch.tensor([[0.0], [0.0], [-1.0], [0.0], [2.0]], requires_grad=True)
    index = torch.tensor([0, 0, 0, 1, 1])
    scatter(src, index, 3, "max", "torch").backward(torch.ones(3, 1))
    assert src.grad is not None
    assert src.grad.flatten().tolist() == [0.5, 0.5, 0.0, 0.0, 1.0]


def test_torch_max_under_no_grad_is_the_plain_kernel() -> None:
    src, index = graph(30, 6, 4, seed=2)
    leaf = src.requires_grad_(True)
    with torch.no_grad():
        out = scatter(leaf, index, 6, "max", "torch")
    assert out.grad_fn is None
    torch.testing.assert_close(out, reference(src.detach(), index, 6, "max"))


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("edges", "nodes", "empty"), [(300, 100, 10), (2000, 1000, 50), (3, 8, 5)])
def test_both_backends_give_the_same_outputs_and_gradients(
    reduce, dtype, edges, nodes, empty
) -> None:
    pytest.importorskip("torch_scatter", reason="torch_scatter not installed (make accel)")
    src, index = graph(edges, nodes, 16, seed=nodes, empty=empty)
    src = src.to(dtype)
    grad = torch.randn(nodes, 16, dtype=dtype)
    outs, grads = [], []
    for backend in ("torch", "torch_scatter"):
        leaf = src.clone().requires_grad_(True)
        out = scatter(leaf, index, nodes, reduce, backend)
        out.backward(grad)
        outs.append(out.detach())
        grads.append(leaf.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    assert outs[0][nodes - empty :].eq(0).all()


def test_auto_measures_once_then_reads_the_cache(tmp_path) -> None:
    first = ScatterBackends(tmp_path, **QUICK)
    chosen = first.choose("auto", CPU, num_edges=300, features=20)
    second = ScatterBackends(tmp_path, **QUICK)
    again = second.choose("auto", CPU, num_edges=500, features=30)  # same bucket: 512 x 32
    assert set(chosen.choice) == set(REDUCTIONS)
    assert again.choice == chosen.choice
    assert again.figures_us == chosen.figures_us
    assert second.measurements == 0
    if torch_scatter_status()[0] is None:
        assert chosen.source == again.source == "fixed"
        assert "torch_scatter not installed" in chosen.note
        assert set(chosen.choice.values()) == {"torch"}
        assert first.measurements == 0
        return
    assert (chosen.source, again.source) == ("measured", "cached")
    assert first.measurements == 1
    for reduce in REDUCTIONS:
        figures = chosen.figures_us[reduce]
        assert set(figures) == {"torch", "torch_scatter"}
        assert chosen.choice[reduce] == min(figures, key=figures.__getitem__)
    cached = json.loads((tmp_path / "scatter_backends.json").read_text())
    assert list(cached["entries"]) == [chosen.key]
    # Another bucket is measured anew and kept beside the first.
    other = second.choose("auto", CPU, num_edges=2000, features=20)
    assert other.source == "measured" and other.key != chosen.key
    assert len(json.loads((tmp_path / "scatter_backends.json").read_text())["entries"]) == 2


def test_auto_caches_forward_only_apart(tmp_path) -> None:
    pytest.importorskip("torch_scatter", reason="torch_scatter not installed: auto never measures")
    backends = ScatterBackends(tmp_path, **QUICK)
    training = backends.choose("auto", CPU, 256, 16)
    deciding = backends.choose("auto", CPU, 256, 16, passes="forward")
    assert (training.source, deciding.source) == ("measured", "measured")
    assert training.key != deciding.key and deciding.key.endswith("|forward")
    assert backends.choose("auto", CPU, 256, 16, passes="forward").source == "cached"
    with pytest.raises(ValueError, match="passes='backward'"):
        backends.choose("auto", CPU, 256, 16, passes="backward")  # type: ignore[arg-type]


def test_auto_leaves_the_global_rng_alone(tmp_path) -> None:
    torch.manual_seed(7)
    ScatterBackends(tmp_path, **QUICK).choose("auto", CPU, num_edges=64, features=8)
    after = torch.rand(3)
    torch.manual_seed(7)
    torch.testing.assert_close(after, torch.rand(3))


@pytest.mark.parametrize("content", ["{not json", '{"format": 1, "entries": {"k": 3}}', "[]"])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, caplog, content) -> None:
    pytest.importorskip("torch_scatter", reason="torch_scatter not installed: auto never caches")
    path = tmp_path / "scatter_backends.json"
    path.write_text(content)
    backends = ScatterBackends(tmp_path, **QUICK)
    with caplog.at_level(logging.WARNING, logger="esper.policy.scatter"):
        chosen = backends.choose("auto", CPU, num_edges=100, features=8)
    assert chosen.source == "measured"
    assert any("corrupt" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert list(json.loads(path.read_text())["entries"]) == [chosen.key]
    assert ScatterBackends(tmp_path).choose("auto", CPU, 100, 8).source == "cached"


def test_the_choice_and_its_figures_are_logged(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="esper.policy.scatter"):
        chosen = ScatterBackends(tmp_path, **QUICK).choose("auto", CPU, 100, 8)
    line = next(r.getMessage() for r in caplog.records if "scatter backends" in r.getMessage())
    assert line == chosen.summary()
    for reduce in REDUCTIONS:
        assert f"{reduce}={chosen.choice[reduce]}" in line
        for backend, us in chosen.figures_us.get(reduce, {}).items():
            assert f"{backend} {us:.1f} us" in line


def test_a_fixed_setting_does_not_measure(tmp_path) -> None:
    backends = ScatterBackends(tmp_path)
    chosen = backends.choose("torch", CPU, 1000, 64)
    assert chosen.source == "fixed" and set(chosen.choice.values()) == {"torch"}
    assert chosen.figures_us == {} and backends.measurements == 0
    assert not (tmp_path / "scatter_backends.json").exists()
    if torch_scatter_status()[0] is not None:
        assert set(backends.choose("torch_scatter", CPU, 1000, 64).choice.values()) == {
            "torch_scatter"
        }


def test_explicit_torch_scatter_without_the_package_is_a_clear_error(tmp_path, monkeypatch) -> None:
    if torch_scatter_status()[0] is not None:
        # Installed: hide it the way a missing package looks to Python's import system.
        monkeypatch.setitem(sys.modules, "torch_scatter", None)
    assert torch_scatter_status() == (None, "torch_scatter not installed")
    with pytest.raises(ValueError) as err:
        ScatterBackends(tmp_path).choose("torch_scatter", CPU, 1000, 64)
    message = str(err.value)
    assert f"{SETTING_KEY}=torch_scatter" in message
    assert "torch_scatter not installed" in message
    assert "auto|torch" in message and "make accel" in message
    # Without the package auto still works, on torch, and says why.
    auto = ScatterBackends(tmp_path).choose("auto", CPU, 1000, 64)
    assert auto.source == "fixed" and set(auto.choice.values()) == {"torch"}
    assert "torch_scatter not installed" in auto.note


def test_torch_scatter_that_cannot_run_on_the_device_is_refused_or_passed_over(tmp_path) -> None:
    """A torch-scatter built without CUDA meets a GPU the way any build meets `meta` tensors."""
    pytest.importorskip("torch_scatter", reason="torch_scatter not installed")
    meta = torch.device("meta")
    with pytest.raises(
        ValueError, match=r"policy\.scatter_backend=torch_scatter.* does not run on meta"
    ):
        ScatterBackends(tmp_path).choose("torch_scatter", meta, 100, 8)
    backends = ScatterBackends(tmp_path)
    auto = backends.choose("auto", meta, 100, 8)
    assert auto.source == "fixed" and set(auto.choice.values()) == {"torch"}
    assert "does not run on meta" in auto.note and backends.measurements == 0


def test_an_unknown_setting_names_the_key_and_what_is_allowed(tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"policy\.scatter_backend='fast'.*auto, torch, torch_scatter"
    ):
        ScatterBackends(tmp_path).choose("fast", CPU, 10, 4)  # type: ignore[arg-type]


def test_the_cache_dir_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ESPER_CACHE_DIR", str(tmp_path / "esper"))
    assert ScatterBackends().cache_path == tmp_path / "esper" / "scatter_backends.json"
    monkeypatch.delenv("ESPER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ScatterBackends().cache_path == tmp_path / "xdg" / "esper" / "scatter_backends.json"


def test_an_unwritable_cache_dir_still_gives_a_choice(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="esper.policy.scatter"):
        chosen = ScatterBackends(blocker / "sub", **QUICK).choose("auto", CPU, 64, 8)
    assert set(chosen.choice) == set(REDUCTIONS)
    if chosen.source == "measured":
        assert any("not written" in r.getMessage() for r in caplog.records)


def test_buckets_are_powers_of_two() -> None:
    assert [bucket(n) for n in (0, 1, 2, 3, 64, 65, 1000, 2048)] == [
        1,
        1,
        2,
        4,
        64,
        128,
        1024,
        2048,
    ]


def test_the_choice_dispatches_per_reduction(tmp_path) -> None:
    chosen = ScatterBackends(tmp_path).choose("torch", CPU, 10, 4)
    src, index = graph(10, 4, 3, seed=3)
    for reduce in REDUCTIONS:
        torch.testing.assert_close(
            chosen.scatter(src, index, 4, reduce), scatter(src, index, 4, reduce, "torch")
        )
