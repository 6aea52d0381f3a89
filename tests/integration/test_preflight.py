"""Every offered blueprint is tried at every slot shape before training (built, held to the
contract, compiled through the run's library): a blueprint that cannot serve a slot is one
config error naming its key, not a seed culled mid-run (issue 8, group 5: A43, A44, A70, ...)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from esper import blueprints
from esper.app import build
from esper.config import ConfigError


class Branchy(nn.Module):
    """Keeps the contract eagerly, but branches on data: torch.export cannot trace it."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.linear(x)
        return 2 * self.linear(x)


def branchy(shape: tuple[int, ...]) -> nn.Module:
    return Branchy(shape[-1])


def divides_by_zero(shape: tuple[int, ...]) -> nn.Module:
    return nn.Linear(shape[-1], shape[-1] // 0)


def misses_a_key(shape: tuple[int, ...]) -> nn.Module:
    return {}["width"]


def runs_out(shape: tuple[int, ...]) -> nn.Module:
    raise RuntimeError("out of\nmemory")


def custom(name: str, builder: str) -> str:
    return f"+blueprints.custom.{name}={{_target_:tests.integration.test_preflight.{builder},kinds:[vector]}}"


SEQUENCE = ("dataset=pydoc_text", "model=transformer_tiny", "blueprints=sequence")

CASES = [
    (
        ["blueprints=vector", "blueprints.hparams.residual_mlp.hidden=-1"],
        r"^blueprints\.hparams\.residual_mlp\.hidden=-1: blueprint 'residual_mlp' at shape \[8\] "
        r"\(slot blocks\.0\): cannot be built: RuntimeError: Trying to create tensor with negative "
        r"dimension -1",
    ),
    (
        ["blueprints=vector", "blueprints.hparams.residual_mlp.hidden=abc"],
        r"^blueprints\.hparams\.residual_mlp\.hidden='abc': .*cannot be built: TypeError",
    ),
    (
        ["blueprints.allowed=[low_rank]", "blueprints.hparams.low_rank.rank=0"],
        r"^blueprints\.hparams\.low_rank\.rank=0: blueprint 'low_rank' at shape \[8\]: has no "
        r"parameters to learn .*\(slot blocks\.0\)$",
    ),
    (
        [*SEQUENCE, "blueprints.hparams.attention.heads=3"],
        r"^blueprints\.hparams\.attention\.heads=3: blueprint 'attention' at shape \[64, 32\] "
        r"\(slot blocks\.0\): cannot be built: ValueError: attention: heads=3 must divide the "
        r"model width 32$",
    ),
    (
        [custom("boom", "divides_by_zero"), "blueprints.allowed=[boom]"],
        r"^blueprints\.custom\.boom: blueprint 'boom' at shape \[8\] \(slot blocks\.0\): cannot "
        r"be built: ZeroDivisionError: integer division or modulo by zero$",
    ),
    (
        [custom("keyless", "misses_a_key"), "blueprints.allowed=[keyless]"],
        r"^blueprints\.custom\.keyless: .*cannot be built: KeyError: 'width'$",
    ),
    (
        [custom("greedy", "runs_out")],  # registered, not offered: still checked
        r"^blueprints\.custom\.greedy: .*cannot be built: RuntimeError: out of$",
    ),
    (
        [custom("branchy", "branchy"), "blueprints.allowed=[branchy]"],
        r"^blueprints\.custom\.branchy: blueprint 'branchy' at shape \[8\] \(slot blocks\.0\): "
        r"cannot be exported: ",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_blueprint_that_cannot_serve_a_slot_fails_before_training(
    make_config, tmp_path, overrides, message
) -> None:
    with pytest.raises(ConfigError, match=message):
        build(make_config("logger=none", *overrides))
    assert not (tmp_path / "run" / "events.jsonl").exists(), "nothing was started"


def test_a_cold_store_compiles_each_offered_kernel_once_and_a_warm_one_nothing(
    make_config, tmp_path
) -> None:
    first = build(make_config("logger=none", run_dir=tmp_path / "a"))
    library = first.trainer.library
    assert library.counts.compiles == 3, "the three vector blueprints at the one shape [8]"
    for name in ("residual_mlp", "low_rank", "residual_block"):
        spec = first.trainer.kernels.spec(name, (8,))
        assert spec == blueprints.kernel_spec(name, (8,), {}, 0, "cpu"), "the trainer's spec"
        assert library.has(spec.key()), "stored: the run's germination finds it"
    first.discard()
    second = build(make_config("logger=none", run_dir=tmp_path / "b"))
    assert second.trainer.library.counts.compiles == 0
    assert second.trainer.library.counts.store_loads == 0, "has() reads the index only"
    second.discard()


def test_a_host_only_run_compiles_nothing_but_still_checks_the_blueprints(
    make_config, tmp_path
) -> None:
    experiment = build(make_config("logger=none", "policy=none"))
    assert experiment.trainer.library.counts.compiles == 0
    experiment.discard()
    bad = make_config(
        "logger=none",
        "policy=none",
        "blueprints.hparams.residual_mlp.hidden=-1",
        run_dir=tmp_path / "bad",
    )
    with pytest.raises(ConfigError, match=r"blueprints\.hparams\.residual_mlp\.hidden=-1"):
        build(bad)


def test_kernels_preflight_false_leaves_built_ins_to_the_run(make_config, tmp_path) -> None:
    cfg = make_config(
        "logger=none", "kernels.preflight=false", "blueprints.hparams.residual_mlp.hidden=-1"
    )
    experiment = build(cfg)
    assert experiment.trainer.library.counts.compiles == 0
    experiment.discard()
    with pytest.raises(ConfigError, match=r"^blueprints\.custom\.boom: .*ZeroDivisionError"):
        build(
            make_config(
                "logger=none",
                "kernels.preflight=false",
                custom("boom", "divides_by_zero"),
                run_dir=tmp_path / "other",
            )
        )


class PickyHost(nn.Module):
    """A user's host that declares nothing about its input and fails on the dataset's."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_a_host_that_cannot_take_the_input_is_one_line(make_config) -> None:
    cfg = make_config(
        "logger=none",
        "~model.hidden",
        "model._target_=tests.integration.test_preflight.PickyHost",
        "model.sites=[linear]",
    )
    with pytest.raises(
        ConfigError,
        match=r"^model: PickyHost cannot take dataset=spirals's input \(float32 \[2\]\): "
        r"RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    ):
        build(cfg)
