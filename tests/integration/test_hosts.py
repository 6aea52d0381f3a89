"""Each host with its dataset, end to end through build(): CIFAR (files written here in
torchvision's format), the char-level transformer on the shipped corpus, and the CNN."""

from __future__ import annotations

import pytest

from esper.app import build
from tests.conftest import ONE_EARLY_SEED
from tests.unit.test_datasets_more import write_cifar


@pytest.mark.slow
def test_resnet_small_on_cifar10(make_config, tmp_path) -> None:
    write_cifar(tmp_path / "cifar", per_batch=16)
    cfg = make_config(
        "dataset=cifar10",
        f"dataset.root={tmp_path / 'cifar'}",
        "model=resnet_small",
        "blueprints=image",
        "trainer.max_epochs=3",
        "dataset.batch_size=16",
        *ONE_EARLY_SEED,
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    assert summary["status"] == "completed"
    assert [s for s in summary["sites"]] == ["layer1", "layer2", "layer3"]
    (kernel,) = summary["kernels"]
    assert kernel["blueprint"] in (
        "conv_residual",
        "depthwise_separable",
        "squeeze_excite",
        "group_norm_gate",
        "bottleneck",
    )


def test_transformer_tiny_on_text_with_an_attention_seed(make_config, tmp_path) -> None:
    cfg = make_config(
        "dataset=pydoc_text",
        "dataset.max_chars=30000",
        "dataset.seq_len=32",
        "model=transformer_tiny",
        "blueprints=sequence",
        "blueprints.allowed=[attention]",
        "trainer.max_epochs=3",
        *ONE_EARLY_SEED,
        run_dir=tmp_path / "run",
    )
    summary = build(cfg).run().model_dump(mode="json")
    assert summary["status"] == "completed"
    states = sorted(s["state"] for s in summary["final_slots"].values())
    assert states == ["DORMANT", "TRAINING"]
    assert summary["kernels"][0]["blueprint"] == "attention"
    assert 0.0 < summary["metrics"]["test_accuracy"] < 1.0
