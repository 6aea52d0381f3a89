"""Stop a run after epoch k, resume it, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.app import build
from esper.config import ConfigError
from esper.events.wandb_file import read_run
from esper.report.runs import load_runs, timeline, val_by_epoch

EARLY = (
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "trainer.max_epochs=20",
)
"""Two seeds in 20 epochs: germinated at 1 and 9, blending at 5 and 13, fossilized at 8 and 16."""

SCHEDULES = {
    "early": (EARLY, 20),
    "default": ((), 80),
}


@pytest.fixture(scope="module", params=["early", pytest.param("default", marks=pytest.mark.slow)])
def uninterrupted(request, tmp_path_factory):
    import os

    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    overrides, epochs = SCHEDULES[request.param]
    root = tmp_path_factory.mktemp("full")
    os.environ["ESPER_KERNEL_STORE"] = str(root / "kernels")
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"run_dir={root / 'run'}",
                "trainer.progress=false",
                "logger=none",
                *overrides,
            ],
        )
    summary = build(cfg).run().model_dump(mode="json")
    del os.environ["ESPER_KERNEL_STORE"]
    assert summary["epochs"] == epochs and len(summary["adaptations"]) == 8
    return request.param, {**summary, "run_dir": str(root / "run")}


STOPS = {"early": (1, 6, 12), "default": (47, 52, 70)}
"""Where each schedule stops: a kernel pending, a seed blending, a second seed training."""


@pytest.mark.parametrize("stop_index", [0, 1, 2])
def test_resume_ends_like_an_uninterrupted_run(make_config, tmp_path, uninterrupted, stop_index):
    schedule, full = uninterrupted
    overrides, epochs = SCHEDULES[schedule]
    stop_after = STOPS[schedule][stop_index]
    first = build(
        make_config(
            *overrides,
            f"trainer.stop_after_epoch={stop_after}",
            run_dir=tmp_path / "first",
        )
    ).run()
    assert first.status == "stopped" and first.epochs == stop_after + 1
    resumed = build(
        make_config(
            *overrides,
            f"trainer.resume={tmp_path / 'first'}",
            run_dir=tmp_path / "second",
        )
    ).run()
    assert resumed.status == "completed" and resumed.epochs == epochs
    assert resumed.resumed_from == str(tmp_path / "first" / "checkpoints" / "last.pt")
    got = resumed.model_dump(mode="json")
    for key in ("metrics", "adaptations", "params", "final_slots"):
        assert got[key] == full[key], key
    assert [k["kernel_id"] for k in got["kernels"]] == [k["kernel_id"] for k in full["kernels"]]
    runs = [read_run(tmp_path / d / "wandb") for d in ("first", "second")]
    assert runs[0].run_id == runs[1].run_id, "the resumed run continues the same W&B run"
    # helper-found: the report read the second directory's epochs alone (a seed DORMANT, then
    # BLENDING; a val curve from the resume on); it reads the first's before them
    (second,) = load_runs([tmp_path / "second"])
    (straight,) = load_runs([Path(full["run_dir"])])
    assert timeline(second) == timeline(straight)
    assert val_by_epoch(second) == val_by_epoch(straight)
    assert sorted(val_by_epoch(second)) == list(range(epochs))


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


def test_a_resume_with_no_epoch_left_is_refused(make_config, tmp_path) -> None:
    """helper-found: a resume whose max_epochs the checkpoint had already reached trained
    nothing and said `completed`; so did a resume of a finished run."""
    build(make_config("trainer.stop_after_epoch=2", "logger=none", run_dir=tmp_path / "a")).run()
    for max_epochs in (2, 3):
        cfg = make_config(
            f"trainer.resume={tmp_path / 'a'}",
            f"trainer.max_epochs={max_epochs}",
            "logger=none",
            run_dir=tmp_path / f"b{max_epochs}",
        )
        with pytest.raises(ConfigError) as refused:
            build(cfg)
        assert str(refused.value) == (
            f"trainer.resume={str(tmp_path / 'a')!r}: the run resumed has trained 3 epochs, and "
            f"trainer.max_epochs={max_epochs} leaves none to train; allowed: "
            "trainer.max_epochs=4 or more (the grown model: esper.load_run)"
        )
        written = tmp_path / f"b{max_epochs}"
        assert not (written / "events.jsonl").exists() and not (written / "summary.json").exists()
    for stop in (0, 2):  # helper-found: a stop the run had passed trained one more epoch
        passed = make_config(
            f"trainer.resume={tmp_path / 'a'}",
            f"trainer.stop_after_epoch={stop}",
            "logger=none",
            run_dir=tmp_path / f"s{stop}",
        )
        with pytest.raises(ConfigError) as refused:
            build(passed)
        assert str(refused.value) == (
            f"trainer.stop_after_epoch={stop} with trainer.resume={str(tmp_path / 'a')!r}: the "
            "run resumed has trained epochs 0 to 2 already; allowed: "
            "trainer.stop_after_epoch=3 or more, or null"
        )
    further = make_config(
        f"trainer.resume={tmp_path / 'a'}",
        "trainer.max_epochs=4",
        "logger=none",
        run_dir=tmp_path / "c",
    )
    assert build(further).run().epochs == 4
