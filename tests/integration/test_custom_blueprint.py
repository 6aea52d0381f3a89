"""A blueprint a user registers from config: checked against the contract, compiled in the
worker process, trained in a slot."""

from __future__ import annotations

import re

import pytest

from esper import blueprints
from esper.app import build
from esper.config import ConfigError
from tests.conftest import ONE_EARLY_SEED, ROOT

CUSTOM = "+blueprints.custom.my_adapter={_target_:tests.blueprints_for_tests.scaled_adapter,kinds:[vector],width:8}"


def test_user_blueprint_from_config_lives_a_seed_life(make_config, tmp_path) -> None:
    cfg = make_config(
        CUSTOM,
        "blueprints.allowed=[my_adapter]",
        *ONE_EARLY_SEED,
        "trainer.max_epochs=10",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    blueprints.check_contract("my_adapter", (8,))
    assert [a["to"] for a in summary["adaptations"]][:3] == ["GERMINATED", "TRAINING", "BLENDING"]
    (kernel,) = summary["kernels"]
    assert kernel["blueprint"] == "my_adapter" and kernel["params"] == 8 * 8 + 8 + 8 * 8 + 8


def test_user_blueprint_that_breaks_the_contract_fails_before_training(make_config) -> None:
    cfg = make_config(
        "+blueprints.custom.bad_adapter={_target_:tests.blueprints_for_tests.broken_adapter,kinds:[vector]}",
        "blueprints.allowed=[bad_adapter]",
        "logger=none",
    )
    with pytest.raises(
        ConfigError,
        match=r"blueprints\.custom\.bad_adapter: blueprint 'bad_adapter' at shape \[8\]: output is not zero at birth",
    ):
        build(cfg)


def test_a_blueprint_torch_cannot_export_is_one_line_without_torchs_trace(
    make_config, capfd
) -> None:
    """Adversarial case A80: the line came after 21 lines of torch's own output (a warning per
    unhinted symbol, the partial FX graph printed twice)."""
    cfg = make_config(
        "+blueprints.custom.dd={_target_:tests.blueprints_for_tests.data_dependent_adapter,kinds:[vector]}",
        "blueprints.allowed=[dd]",
        *ONE_EARLY_SEED,
        "logger=none",
    )
    with pytest.raises(
        ConfigError,
        match=r"blueprints\.custom\.dd: blueprint 'dd' at shape \[8\] \(slot \S+\): cannot be "
        r"exported: GuardOnDataDependentSymNode: .* \(caused by \S*blueprints_for_tests\.py:\d+ in "
        r"forward\)$",
    ):
        build(cfg)
    printed = capfd.readouterr()
    assert "def forward" not in printed.err + printed.out, printed.err[-2000:]
    assert "symbolic_shapes" not in printed.err, printed.err[-2000:]


def test_a_blueprint_torch_cannot_export_in_the_compile_worker_culls_its_seed_saying_why(
    make_config, tmp_path
) -> None:
    """helper-found: compiled in the worker process (no preflight), the seed was culled for
    "kernel failed: GuardOnDataDependentSymNode: ", torch's message lost on its way back."""
    cfg = make_config(
        "+blueprints.custom.dd={_target_:tests.blueprints_for_tests.data_dependent_adapter,kinds:[vector]}",
        "blueprints.allowed=[dd]",
        *ONE_EARLY_SEED,
        "kernels.preflight=false",
        "kernels.async_compile=true",
        "trainer.max_epochs=3",
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    (culled,) = [a for a in summary["adaptations"] if a["to"] == "CULLED"]
    assert re.fullmatch(
        r"kernel failed: GuardOnDataDependentSymNode: Could not guard on data-dependent "
        r"expression .+ \(caused by \S*blueprints_for_tests\.py:\d+ in forward\)",
        culled["reason"],
    ), culled["reason"]


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("{kinds:[vector]}", r"blueprints\.custom\.x\._target_ is missing"),
        (
            "{_target_:tests.blueprints_for_tests.scaled_adapter,kinds:[audio]}",
            r"blueprints\.custom\.x\.kinds=\['audio'\]; allowed: vector, sequence, image",
        ),
        (  # one kind without brackets is that kind (helper-found: named letter by letter)
            "{_target_:tests.blueprints_for_tests.scaled_adapter,kinds:audio}",
            r"blueprints\.custom\.x\.kinds=\['audio'\]; allowed: vector, sequence, image",
        ),
        (
            "{_target_:tests.nowhere.builder,kinds:[vector]}",
            r"blueprints\.custom\.x\._target_='tests\.nowhere\.builder' cannot be imported",
        ),
    ],
)
def test_bad_custom_entries_name_their_key(make_config, node: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(make_config(f"+blueprints.custom.x={node}", "logger=none"))


def test_another_builder_under_the_same_name_gets_its_own_kernel(tmp_path) -> None:
    """helper-found: the kernel key was the blueprint's name and hyper-parameters, so a custom
    blueprint whose builder changed (an edit, another `_target_`; or a colleague's, through a
    shared S3 library) was handed the old builder's kernel from the store, silently."""
    import json

    from tests.conftest import run_cli

    def run(target: str, name: str) -> dict:
        result = run_cli(
            f"+blueprints.custom.mine={{_target_:tests.blueprints_for_tests.{target},kinds:[vector]}}",
            "blueprints.allowed=[mine]",
            *ONE_EARLY_SEED,
            "trainer.max_epochs=2",
            "trainer.progress=false",
            f"hydra.run.dir={tmp_path / name}",
            cwd=ROOT,
            env={"ESPER_KERNEL_STORE": str(tmp_path / "shared-store")},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((tmp_path / name / "summary.json").read_text())

    narrow = run("narrow_adapter", "first")
    wide = run("wide_adapter", "second")
    (narrow_kernel,), (wide_kernel,) = narrow["kernels"], wide["kernels"]
    assert (narrow_kernel["params"], wide_kernel["params"]) == (
        2 * 8 * 8 + 8 + 8,
        2 * 8 * 32 + 32 + 8,
    )


MODE_DEPENDENT = {
    "dropout_adapter": "draws random numbers (aten.dropout: Dropout, or a random draw in its",
    "noisy_adapter": "draws random numbers (aten.randn_like: Dropout, or a random draw in its",
    "training_branch_adapter": "computes otherwise in evaluation (by ",
}


@pytest.mark.parametrize("name", MODE_DEPENDENT, ids=list(MODE_DEPENDENT))
def test_a_seed_that_computes_otherwise_in_evaluation_is_refused_before_training(
    make_config, name
) -> None:
    """helper-found: a Dropout, a random draw or a branch on self.training in a seed passed
    the contract (zero at birth whatever it draws) and validated equal to eager (both zero);
    its kernel, exported from training mode, kept dropping out (or the training branch) after
    model.eval(): val and test were drawn at random, or computed otherwise.
    (A BatchNorm with running statistics is refused by the contract: its forward changes
    them.)"""
    cfg = make_config(
        f"+blueprints.custom.{name}={{_target_:tests.blueprints_for_tests.{name},kinds:[vector]}}",
        f"blueprints.allowed=[{name}]",
        *ONE_EARLY_SEED,
        "logger=none",
    )
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    said = str(refused.value)
    assert said.startswith(f"blueprints.custom.{name}: blueprint '{name}' at shape [8]"), said
    assert f"cannot be exported: its forward {MODE_DEPENDENT[name]}" in said
    assert said.endswith(
        "(no Dropout or random draws; GroupNorm or LayerNorm for BatchNorm)"
        if "random" in MODE_DEPENDENT[name]
        else "a branch on self.training?); a kernel runs as exported, from training mode, in "
        "evaluation too; allowed: a forward that computes the same in both"
    )
