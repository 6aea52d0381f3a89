"""A damaged GNN policy checkpoint behind a valid header (`policy.checkpoint=PATH`) is refused
when the policy is built, in one line naming `policy.checkpoint` and what is wrong: weights
that are not finite, missing, of another architecture, a `trained` record that is no mapping,
or a value that is no path at all. Each file is the shipped checkpoint, altered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from esper.app import _instantiate
from esper.config import ConfigError
from esper.policy.gnn import SHIPPED
from tests.conftest import run_cli

KEY = r"^policy: policy\.checkpoint='[^']*': "


def shipped() -> dict[str, Any]:
    return torch.load(SHIPPED["shipped"], map_location="cpu", weights_only=True)


def build_policy(make_config, *overrides: str) -> Any:
    """The policy as esper.app.build instantiates it from the composed config."""
    cfg = make_config("policy=gnn", "logger=none", *overrides)
    return _instantiate("policy", OmegaConf.to_container(cfg.policy, resolve=True))


def nan_weights(state: dict[str, Any]) -> None:
    state["weights"]["operation.weight"][0, 0] = float("nan")


def inf_weights(state: dict[str, Any]) -> None:
    state["weights"]["value.2.bias"][0] = float("inf")


def no_weights(state: dict[str, Any]) -> None:
    del state["weights"]


def weights_not_a_mapping(state: dict[str, Any]) -> None:
    state["weights"] = list(state["weights"].values())


def other_hidden(state: dict[str, Any]) -> None:
    """Weights of a hidden=16 network behind a header that claims this policy's hidden=32."""
    state["weights"] = {
        k: v[..., :16] if v.dim() > 1 else v[:16] for k, v in state["weights"].items()
    }


def fewer_layers(state: dict[str, Any]) -> None:
    state["weights"] = {k: v for k, v in state["weights"].items() if not k.startswith("convs.1.")}


def extra_layer(state: dict[str, Any]) -> None:
    state["weights"]["convs.2.own.weight"] = torch.zeros(32, 32)


def not_a_tensor(state: dict[str, Any]) -> None:
    state["weights"]["operation.bias"] = [0.0] * 5


def trained_list(state: dict[str, Any]) -> None:
    state["trained"] = [["updates", 230]]


def trained_text(state: dict[str, Any]) -> None:
    state["trained"] = "updates=230"


CASES = [
    (nan_weights, r"its weights are not finite \(operation\.weight holds NaN or inf\)"),
    (inf_weights, r"its weights are not finite \(value\.2\.bias holds NaN or inf\)"),
    (
        no_weights,
        r"not a GNN policy checkpoint \(no 'weights', the mapping of tensor names to tensors\)$",
    ),
    (
        weights_not_a_mapping,
        r"not a GNN policy checkpoint \(no 'weights', the mapping of tensor names to tensors\)$",
    ),
    (
        other_hidden,
        r"its weights do not fit this policy \(hidden=32, layers=2\): "
        r"shape encode\.0\.weight \(32, 16\), expected \(32, 29\); .*; "
        r"set policy\.hidden / policy\.layers to the checkpoint's, or pass one of this shape",
    ),
    (
        fewer_layers,
        r"its weights do not fit this policy \(hidden=32, layers=2\): "
        r"missing convs\.1\.neighbours\.weight, convs\.1\.own\.bias, convs\.1\.own\.weight;",
    ),
    (
        extra_layer,
        r"its weights do not fit this policy \(hidden=32, layers=2\): "
        r"unexpected convs\.2\.own\.weight;",
    ),
    (
        not_a_tensor,
        r"its weights do not fit this policy .*: operation\.bias is a list, not a tensor;",
    ),
    (trained_list, r"not a GNN policy checkpoint \('trained' is a list, not a mapping\)$"),
    (trained_text, r"not a GNN policy checkpoint \('trained' is a str, not a mapping\)$"),
]


@pytest.mark.parametrize(("damage", "reason"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_damaged_policy_checkpoint_is_one_line(make_config, tmp_path, damage, reason) -> None:
    state = shipped()
    damage(state)
    path = tmp_path / "policy.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=KEY + reason) as caught:
        build_policy(make_config, f"policy.checkpoint={path}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("123", "123"), ("true", "True"), ("[a.pt]", "['a.pt']"), ("{path:a.pt}", "{'path': 'a.pt'}")],
)
def test_a_checkpoint_that_is_no_path_is_one_line(make_config, value, shown) -> None:
    with pytest.raises(ConfigError) as caught:
        build_policy(make_config, f"policy.checkpoint={value}")
    assert str(caught.value) == (
        f"policy: policy.checkpoint={shown}: expected a path to a .pt file, shipped, "
        "shipped_growth, or null (initial weights)"
    )


def test_the_shipped_checkpoint_still_loads(make_config) -> None:
    policy = build_policy(make_config, "policy=gnn_growth")
    assert policy.describe()["trained"]["updates"]


@pytest.mark.slow
def test_run_py_refuses_nan_weights_before_training(tmp_path: Path) -> None:
    state = shipped()
    nan_weights(state)
    torch.save(state, tmp_path / "nan.pt")
    result = run_cli(
        "policy=gnn",
        "logger=none",
        f"policy.checkpoint={tmp_path / 'nan.pt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("esper: policy: policy.checkpoint=") and "not finite" in lines[0]
    assert not (tmp_path / "run" / "events.jsonl").exists(), "training never started"
