"""The GNN policy never emits an illegal decision, over random graphs and states; its weights
save and load; its decisions carry their probabilities."""

from __future__ import annotations

import sys
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import esper
from esper.contracts import Observation, SeedState, SiteStats, SlotObservation
from esper.models import MLP
from esper.policy import GnnPolicy
from esper.seeds import check_transition

S = SeedState
VECTOR = ("residual_mlp", "low_rank")
TARGET = {"germinate": S.GERMINATED, "fossilize": S.FOSSILIZED, "cull": S.CULLED}


@cache
def model(slots: int, depth: int):
    """An MLP with `depth` hidden layers and a slot after the first `slots` of them."""
    host = MLP((3,), 2, hidden=[6] * depth)
    return esper.wrap(host, [f"blocks.{i}" for i in range(slots)], torch.randn(2, 3))


slot_state = st.fixed_dictionaries(
    {
        "state": st.sampled_from(list(S)),
        "kernel_ready": st.booleans(),
        "allowed": st.lists(st.sampled_from(VECTOR), unique=True, max_size=2),
        "grad": st.floats(0, 10),
        "alpha": st.floats(0, 1),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    depth=st.integers(1, 5),
    data=st.data(),
    max_in_flight=st.integers(1, 3),
    max_seeds=st.one_of(st.none(), st.integers(0, 3)),
    seed=st.integers(0, 2**16),
    greedy=st.booleans(),
    lifecycle=st.sampled_from(["learned", "schedule"]),
)
def test_decisions_are_always_legal(
    depth, data, max_in_flight, max_seeds, seed, greedy, lifecycle
) -> None:
    slots = data.draw(st.integers(1, depth))
    wrapped = model(slots, depth)
    states = data.draw(st.lists(slot_state, min_size=slots, max_size=slots))
    names = [s.name for s in wrapped.iter_slots()]
    obs = Observation(
        epoch=2,
        max_epochs=10,
        train_loss=0.5,
        train_accuracy=0.7,
        val_loss=0.6,
        val_accuracy=0.6,
        val_loss_history=(0.8, 0.7, 0.6),
        slots=tuple(
            SlotObservation(
                name=n,
                kind="vector",
                shape=(6,),
                state=s["state"],
                alpha=s["alpha"],
                kernel_ready=s["kernel_ready"] and s["state"] is S.GERMINATED,
                blueprint=None if s["state"] is S.DORMANT else "low_rank",
                stats=SiteStats(activation_mean=0.0, activation_std=1.0, grad_norm=s["grad"]),
            )
            for n, s in zip(names, states)
        ),
        allowed_blueprints={n: tuple(s["allowed"]) for n, s in zip(names, states)},
    )
    wrapped.graph.update(obs, {}, {})
    obs = obs.model_copy(update={"graph": wrapped.graph})
    policy = GnnPolicy(
        seed=seed,
        greedy=greedy,
        max_in_flight=max_in_flight,
        max_seeds=max_seeds,
        scatter_backend="torch",
        lifecycle=lifecycle,
    )
    *scheduled, decision = policy.decide(obs)
    assert decision.probabilities and 0 < decision.probabilities["action"] <= 1
    if lifecycle == "learned":
        assert not scheduled
    else:  # the network only germinates; the schedule does the rest
        assert decision.action in ("wait", "germinate")
        assert all(d.action in ("advance", "fossilize", "cull") for d in scheduled)
    for made in (*scheduled, decision):
        assert_legal(obs, made, max_in_flight, max_seeds)


def assert_legal(obs: Observation, decision, max_in_flight: int, max_seeds: int | None) -> None:
    if decision.action == "wait":
        return
    slot = next(s for s in obs.slots if s.name == decision.slot)
    if decision.action == "germinate":
        assert slot.state is S.DORMANT
        assert decision.blueprint in obs.allowed_blueprints[slot.name]
        in_flight = sum(s.state in (S.GERMINATED, S.TRAINING, S.BLENDING) for s in obs.slots)
        assert in_flight < max_in_flight and (max_seeds is None or max_seeds > 0)
    elif decision.action == "advance":
        assert (slot.state is S.GERMINATED and slot.kernel_ready) or slot.state is S.TRAINING
    target = TARGET.get(decision.action)
    if decision.action == "advance":
        target = S.TRAINING if slot.state is S.GERMINATED else S.BLENDING
    check_transition(slot.name, slot.state, target)


def test_a_checkpoint_runs_under_the_lifecycle_it_was_trained_under(tmp_path) -> None:
    path = tmp_path / "policy.pt"
    GnnPolicy(seed=1, lifecycle="schedule").save_weights(path, {"updates": 1})
    assert GnnPolicy(checkpoint=str(path)).lifecycle == "schedule"
    assert GnnPolicy(checkpoint=str(path), lifecycle="schedule").describe()["lifecycle"] == (
        "schedule"
    )
    with pytest.raises(
        ValueError, match=r"trained to decide under lifecycle 'schedule', not policy.lifecycle="
    ):
        GnnPolicy(checkpoint=str(path), lifecycle="learned")
    older = torch.load(path, weights_only=True)
    del older["lifecycle"]  # checkpoints written before the setting: every operation learned
    torch.save(older, tmp_path / "older.pt")
    assert GnnPolicy(checkpoint=str(tmp_path / "older.pt")).lifecycle == "learned"
    older["lifecycle"] = "whatever"  # a corrupt or crafted file does not run as something else
    torch.save(older, tmp_path / "crafted.pt")
    with pytest.raises(ValueError, match=r"not a GNN policy checkpoint \(lifecycle 'whatever'\)"):
        GnnPolicy(checkpoint=str(tmp_path / "crafted.pt"))
    with pytest.raises(ValueError, match=r"policy.lifecycle='rules'; allowed: learned, schedule"):
        GnnPolicy(lifecycle="rules")  # type: ignore[arg-type]


def test_weights_round_trip_and_a_bad_checkpoint_is_one_line(tmp_path) -> None:
    policy = GnnPolicy(seed=1, scatter_backend="torch")
    path = tmp_path / "policy.pt"
    policy.save_weights(path, {"updates": 3})
    loaded = GnnPolicy(seed=2, checkpoint=str(path), scatter_backend="torch")
    for a, b in zip(policy.net.parameters(), loaded.net.parameters()):
        assert torch.equal(a, b)
    assert loaded.describe()["trained"] == {"updates": 3}
    assert GnnPolicy(seed=2).describe()["weights"] == "initial (seed 2), untrained"
    with pytest.raises(ValueError, match=r"policy\.checkpoint=.*trained for .*hidden"):
        GnnPolicy(checkpoint=str(path), hidden=16)
    allowed = "allowed: a .pt file, or one of shipped, shipped_growth"
    with pytest.raises(ValueError, match=f"no such file; {allowed}"):
        GnnPolicy(checkpoint="shipped_growthx")
    with pytest.raises(ValueError, match=f"a directory; {allowed}"):  # it said "no such file"
        GnnPolicy(checkpoint=str(tmp_path))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"policy\.checkpoint=.*not a GNN policy checkpoint"):
        GnnPolicy(checkpoint=str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match=r"policy\.hidden=0 must be an integer >= 1"):
        GnnPolicy(hidden=0)
    # helper-found: 'false' took argmax; 'abc' and 1.5 were torch's messages; '' "a directory"
    with pytest.raises(ValueError, match=r"^policy\.greedy='false' must be true or false$"):
        GnnPolicy(greedy="false")  # type: ignore[arg-type]
    for seed in ("abc", 1.5, -1, 2**64):  # 2**64: torch's "Overflow when unpacking long long"
        with pytest.raises(ValueError, match=r"^policy\.seed=.* must be"):
            GnnPolicy(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^policy\.checkpoint='' is empty; allowed: a path"):
        GnnPolicy(checkpoint="")


@pytest.mark.parametrize("name", ["shipped", "shipped_growth"])
def test_the_shipped_checkpoints_load_and_decide_legally(name: str) -> None:
    from esper.policy.gnn import SHIPPED

    assert SHIPPED[name].is_file(), "the trained policies ship in the package"
    policy = GnnPolicy(checkpoint=name, scatter_backend="torch")
    trained = policy.describe()["trained"]
    assert policy.describe()["weights"] == "trained" and trained["updates"]
    wrapped = model(2, 2)
    names = [s.name for s in wrapped.iter_slots()]
    obs = Observation(
        epoch=0,
        max_epochs=20,
        train_loss=0.7,
        train_accuracy=0.5,
        val_loss=0.7,
        val_accuracy=0.5,
        val_loss_history=(0.7,),
        slots=tuple(
            SlotObservation(
                name=n,
                kind="vector",
                shape=(6,),
                state=S.DORMANT,
                stats=SiteStats(activation_mean=0.0, activation_std=1.0, grad_norm=1.0),
            )
            for n in names
        ),
        allowed_blueprints={n: VECTOR for n in names},
    )
    wrapped.graph.update(obs, {}, {})
    for _ in range(5):
        *_, decision = policy.decide(obs.model_copy(update={"graph": wrapped.graph}))
        assert decision.action in ("wait", "germinate")
        if decision.action == "germinate":
            assert decision.blueprint in VECTOR


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("torch_scatter", "torch_scatter not installed: install the accel extra"),
        ("fast", "allowed"),
    ],
)
def test_a_scatter_backend_that_cannot_run_is_refused_when_the_policy_is_built(
    monkeypatch, setting: str, said: str
) -> None:
    """Before, the run trained its first epoch and failed at the first control step with a
    traceback (and logged `policy.scatter_backend=torch` on the way)."""
    monkeypatch.setitem(sys.modules, "torch_scatter", None)  # import fails: not installed
    with pytest.raises(ValueError, match=f"policy.scatter_backend.*{said}"):
        GnnPolicy(scatter_backend=setting)  # type: ignore[arg-type]


def test_building_a_policy_leaves_no_file_in_the_temporary_directory(tmp_path) -> None:
    """PyG renders `propagate` into a file in the temporary directory once a process: each run
    and each Simic episode worker left one there (thousands over a training). A fresh process,
    as a run is, builds the shipped policy and decides; the directory stays empty."""
    import os
    import subprocess

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    script = (
        "import torch\n"
        "from esper.policy import GnnPolicy\n"
        "policy = GnnPolicy(checkpoint='shipped', scatter_backend='torch')\n"
        "net = policy.net\n"
        "x = torch.randn(3, net.encode[0].in_features)\n"
        "edges = torch.tensor([[0, 1], [1, 2]])\n"
        "print(net.convs[0](net.encode(x), edges).shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        # as Python runs by default: its bytecode is cached beside the file (helper-found)
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "TMPDIR": str(temporary),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "torch.Size([3, 32])" in done.stdout
    assert list(temporary.iterdir()) == []
