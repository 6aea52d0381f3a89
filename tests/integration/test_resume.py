"""Stop a run after epoch k, resume it, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest

from esper.app import build
from esper.config import ConfigError
from esper.events.wandb_file import read_run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    import os

    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    root = tmp_path_factory.mktemp("full")
    os.environ["ESPER_KERNEL_STORE"] = str(root / "kernels")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"run_dir={root / 'run'}", "trainer.progress=false", "logger=none"]
        )
    summary = build(cfg).run()
    del os.environ["ESPER_KERNEL_STORE"]
    return summary


@pytest.mark.parametrize("stop_after", [47, 52, 70])
def test_resume_ends_like_an_uninterrupted_run(make_config, tmp_path, uninterrupted, stop_after):
    first = build(
        make_config(
            f"trainer.stop_after_epoch={stop_after}",
            run_dir=tmp_path / "first",
        )
    ).run()
    assert first["status"] == "stopped" and first["epochs"] == stop_after + 1
    resumed = build(
        make_config(
            f"trainer.resume={tmp_path / 'first'}",
            run_dir=tmp_path / "second",
        )
    ).run()
    assert resumed["status"] == "completed" and resumed["epochs"] == 80
    assert resumed["resumed_from"] == str(tmp_path / "first" / "checkpoints" / "last.pt")
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["adaptations"] == uninterrupted["adaptations"]
    assert resumed["params"] == uninterrupted["params"]
    assert resumed["final_slots"] == uninterrupted["final_slots"]
    runs = [read_run(tmp_path / d / "wandb") for d in ("first", "second")]
    assert runs[0].run_id == runs[1].run_id, "the resumed run continues the same W&B run"


def test_resume_refuses_a_different_configuration(make_config, tmp_path) -> None:
    build(make_config("trainer.stop_after_epoch=2", "logger=none", run_dir=tmp_path / "a")).run()
    cfg = make_config(
        f"trainer.resume={tmp_path / 'a'}",
        "model.hidden=[16,16]",
        "logger=none",
        run_dir=tmp_path / "b",
    )
    with pytest.raises(
        ConfigError, match=r"model\.hidden: checkpoint \[8, 8\], this run \[16, 16\]"
    ):
        build(cfg)
    with pytest.raises(ConfigError, match=r"trainer\.resume=.*: no checkpoint at"):
        build(make_config(f"trainer.resume={tmp_path / 'nothing'}", "logger=none"))
