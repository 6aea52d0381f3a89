"""Every option of every config group, and every preset, builds into a real experiment.

Composing is not enough: this instantiates the dataset, host, slots, store, policy and logger
each option selects (with the companions it needs: an image host for image data, and so on),
checks what was built, and closes it without training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from esper.app import build
from esper.config import GROUPS, ConfigError
from tests.integration.test_config_tree import OPTIONS, compose_job
from tests.unit.test_datasets_more import write_cifar

IMAGE = ("dataset=digits", "model=cnn", "blueprints=image")
TEXT = ("dataset=pydoc_text", "model=transformer_tiny", "blueprints=sequence")
CIFAR = ("dataset=cifar10", "model=resnet_small", "blueprints=image")
COMPANIONS: dict[str, tuple[str, ...]] = {
    "dataset=digits": IMAGE,
    "model=cnn": IMAGE,
    "blueprints=image": IMAGE,
    "dataset=pydoc_text": TEXT,
    "model=transformer_tiny": TEXT,
    "blueprints=sequence": TEXT,
    "dataset=cifar10": CIFAR,
    "model=resnet_small": CIFAR,
}
"""An option's companions: the other choices it only works with."""


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> Iterator[Path]:
    """One kernel store for the module: each distinct kernel is compiled (by the check before
    training) once, not once per option."""
    store = tmp_path_factory.mktemp("kernels")
    saved = os.environ.get("ESPER_KERNEL_STORE")
    os.environ["ESPER_KERNEL_STORE"] = str(store)
    yield store
    if saved is None:
        del os.environ["ESPER_KERNEL_STORE"]
    else:
        os.environ["ESPER_KERNEL_STORE"] = saved


HEAVY = {("dataset", "cifar10"), ("model", "resnet_small")}
"""Their check before training compiles 15 image kernels at 32x32 (about 15 s cold): slow tier."""


@pytest.mark.parametrize(
    ("group", "option"),
    [pytest.param(g, o, marks=[pytest.mark.slow] if (g, o) in HEAVY else []) for g, o in OPTIONS],
    ids=[f"{g}={o}" for g, o in OPTIONS],
)
def test_every_option_builds(group, option, shared_store, tmp_path: Path, request) -> None:
    choice = f"{group}={option}"
    overrides = [*COMPANIONS.get(choice, ()), choice]
    if group != "logger":
        overrides.insert(0, "logger=none")  # one W&B run below is enough
    if "dataset=cifar10" in overrides:
        write_cifar(tmp_path / "data")
        overrides.append(f"dataset.root={tmp_path / 'data'}")
    if choice == "storage=s3":
        endpoint, bucket = (
            request.getfixturevalue("s3_endpoint"),
            request.getfixturevalue("s3_bucket"),
        )
        overrides += [f"storage.endpoint_url={endpoint}", f"storage.bucket={bucket}"]
    cfg = compose_job(*overrides, f"run_dir={tmp_path / 'run'}", "trainer.progress=false")
    if cfg.trainer.device == "cuda" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            build(cfg)
        return
    experiment = build(cfg)
    trainer = experiment.trainer
    slots = list(trainer.model.iter_slots())
    assert slots and all(trainer.allowed[s.name] for s in slots), "every site can grow"
    if group in GROUPS:  # presets (experiment, debug, ...) are not groups of the record
        assert experiment.identity.choices[group] == option
    record = experiment.discard()
    assert record.status == "stopped" and record.epochs == 0
    assert (tmp_path / "run" / "summary.json").is_file()
    assert (record.wandb["mode"] != "disabled") == (cfg.logger.get("_target_") is not None)
