"""esper.load_run: the model a run grew, back outside the run, equal to the run's own."""

from __future__ import annotations

import pytest
import torch

import esper
from esper.app import build
from esper.config import ConfigError
from esper.training.steps import evaluate
from tests import user_parts
from tests.conftest import KEEP_IT, ONE_EARLY_SEED

KEPT = (*ONE_EARLY_SEED, *KEEP_IT, "trainer.checkpoint=true")


@pytest.mark.parametrize(
    "overrides",
    [(), ("trainer.max_epochs=2",)],  # a merged seed: test_merge_run.py
    ids=["fossilized", "seed-not-yet-fossilized"],
)
def test_a_loaded_run_gives_the_runs_own_test_accuracy(make_config, tmp_path, overrides):
    """helper-found: a grown model's state_dict() did not load into a freshly wrapped host
    (its slots hold no seed modules); there was no way back to the model but a resume."""
    run_dir = tmp_path / "run"
    summary = build(make_config(*KEPT, *overrides, run_dir=run_dir)).run()
    before = torch.random.get_rng_state()
    loaded = esper.load_run(run_dir)
    assert torch.equal(torch.random.get_rng_state(), before), "the caller's random state kept"
    slots = {s.name: (s.state, s.blueprint) for s in loaded.model.iter_slots()}
    assert slots == {k: (v.state, v.blueprint) for k, v in summary.final_slots.items()}
    assert any(blueprint for _, blueprint in slots.values()), "a seed to restore"
    assert loaded.model.seed_parameter_count() > 0
    assert loaded.model.param_counts() == summary.params
    test = evaluate(loaded.model, loaded.data.test, torch.device("cpu"))
    assert (test.loss, test.accuracy) == (
        summary.metrics["test_loss"],
        summary.metrics["test_accuracy"],
    )
    assert loaded.epoch == summary.epochs - 1 and not loaded.model.training


def test_a_path_that_holds_no_checkpoint_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^load_run='.*/nowhere': no checkpoint at .*last\.pt$"):
        esper.load_run(tmp_path / "nowhere")
    (tmp_path / "file.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^load_run='.*/file.pt': not a valid Esper checkpoint"):
        esper.load_run(tmp_path / "file.pt")


def spoil(run_dir, change) -> None:
    """Edit one part of the run's checkpoint, written back as Esper writes it."""
    path = run_dir / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def first_seed_weight(state) -> str:
    return next(k for k in state["model"] if ".seed." in k)


DAMAGE = {
    "weight-missing": lambda s: s["model"].pop(first_seed_weight(s)),
    "weight-shape": lambda s: s["model"].update({first_seed_weight(s): torch.zeros(1)}),
    "slot-missing": lambda s: s["slots"].pop(next(iter(s["slots"]))),
    "state-unknown": lambda s: [v.update(state="WHATEVER") for v in s["slots"].values()],
    "slots-a-list": lambda s: s.update(slots=[]),
    "epoch-text": lambda s: s.update(epoch="x"),
    "config-none": lambda s: s.update(config=None),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_checkpoint_is_one_line(make_config, tmp_path, damage) -> None:
    """helper-found: each was a KeyError, ValueError or state-dict RuntimeError traceback."""
    run_dir = tmp_path / "run"
    build(make_config(*KEPT, "trainer.max_epochs=3", run_dir=run_dir)).run()
    spoil(run_dir, DAMAGE[damage])
    with pytest.raises(ConfigError) as refused:
        esper.load_run(run_dir)
    said = str(refused.value)
    expected = (
        "the checkpoint's weights do not fit the model built now ("
        if damage.startswith("weight-")
        else "not a valid Esper checkpoint ("
    )
    assert said.startswith(f"load_run='{run_dir}': {expected}") and "\n" not in said, said
    if damage == "slot-missing":  # and a resume of it, the same way
        cfg = make_config(*KEPT, f"trainer.resume={run_dir}", run_dir=tmp_path / "again")
        with pytest.raises(ConfigError, match=r"^trainer.resume='.*': not a valid Esper checkp"):
            build(cfg)


def test_a_run_without_a_checkpoint_says_it_kept_none(make_config, tmp_path) -> None:
    run_dir = tmp_path / "run"
    build(make_config(*ONE_EARLY_SEED, "trainer.max_epochs=1", run_dir=run_dir)).run()
    with pytest.raises(
        ConfigError, match=r"the run kept no checkpoint \(trainer.checkpoint=false\)"
    ):
        esper.load_run(run_dir)


def test_data_changed_since_the_run_is_named_not_numbered(make_config, tmp_path) -> None:
    """helper-found: load_run built the dataset again by its factory, and a file changed on
    disk since the run gave other test numbers without a word; a resume trained on."""
    rows = tmp_path / "rows.pt"
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "y": (x[:, 0] > 0).long()}, rows)
    from_file = (
        "dataset=spirals",
        "~dataset",
        "+dataset._target_=tests.user_parts.dataset_from_file",
        f"+dataset.path={rows}",
    )
    run_dir = tmp_path / "run"
    summary = build(make_config(*KEPT, *from_file, "trainer.max_epochs=3", run_dir=run_dir)).run()
    assert len(esper.load_run(run_dir).data.test.x) == 80, "the same file loads"

    torch.save({"x": x, "y": (x[:, 1] > 0).long()}, rows)  # other labels, same shapes
    differs = r"the dataset differs from the run's \(the train, val, test splits now hold other"
    with pytest.raises(ConfigError, match=rf"^load_run='.*/run': {differs}.*check_data=False"):
        esper.load_run(run_dir)
    loaded = esper.load_run(run_dir, check_data=False)
    assert loaded.model.param_counts() == summary.params, "the run's model, on today's data"
    resume = make_config(
        *KEPT,
        *from_file,
        "trainer.max_epochs=4",
        f"trainer.resume={run_dir}",
        run_dir=tmp_path / "b",
    )
    with pytest.raises(ConfigError, match=rf"^trainer.resume='.*/run': {differs}"):
        build(resume)
    assert not (tmp_path / "b" / "events.jsonl").exists(), "refused before anything was written"


class EditedHost(user_parts.Host):
    """The user's host after an edit: a layer more, a wider head."""

    def __init__(self, input_shape, num_classes, kind: str = "ok") -> None:
        super().__init__(input_shape, num_classes, kind)
        self.extra = torch.nn.Linear(2, 2)
        self.body[0] = torch.nn.Linear(input_shape[0], 8, bias=False)


USER_RUN = (
    "dataset=spirals",
    "model=mlp",
    "~model",
    "+model._target_=tests.user_parts.Host",
    "+model.sites=[body]",
)


def test_a_host_edited_since_the_run_names_the_weights_that_differ(
    make_config, tmp_path, monkeypatch
) -> None:
    """helper-found: load_run (and a resume) of a run whose host class was edited since said
    "not a valid Esper checkpoint (RuntimeError: Error(s) in loading state_dict for
    MorphogeneticModel:)": no weight named, and the checkpoint blamed."""
    run_dir = tmp_path / "run"
    build(make_config(*KEPT, *USER_RUN, "trainer.max_epochs=2", run_dir=run_dir)).run()
    monkeypatch.setattr(user_parts, "Host", EditedHost)
    with pytest.raises(ConfigError) as refused:
        esper.load_run(run_dir)
    assert str(refused.value) == (
        f"load_run='{run_dir}': the checkpoint's weights do not fit the model built now (the "
        "model has host.extra.weight, host.extra.bias, which the checkpoint lacks; the "
        "checkpoint has host.body.0.bias, which the model lacks): the host's code differs from "
        "the run's, or the checkpoint is damaged"
    )
    cfg = make_config(*KEPT, *USER_RUN, f"trainer.resume={run_dir}", run_dir=tmp_path / "again")
    with pytest.raises(ConfigError, match=r"^trainer.resume='.*': the checkpoint's weights do"):
        build(cfg)


def test_a_run_that_diverged_is_loaded_with_its_status_said(make_config, tmp_path, caplog):
    """helper-found: a diverged run's model (weights near 1e30, its val loss NaN) came back
    from load_run without a word; its summary.json said `diverged`."""
    from esper.training.guard import Diverged

    run_dir = tmp_path / "run"
    experiment = build(
        make_config(
            "policy=none",
            "logger=none",
            "trainer.checkpoint=true",
            "trainer.optimizer.lr=1e30",
            "trainer.max_epochs=6",
            run_dir=run_dir,
        )
    )
    with pytest.raises(Diverged):
        experiment.run()
    loaded = esper.load_run(run_dir)
    assert loaded.status == "diverged"
    (record,) = [r for r in caplog.records if r.name == "esper.grown"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        f"load_run={str(run_dir)!r}: the run diverged (its summary.json); this is its model as "
        f"the checkpoint of epoch {loaded.epoch} left it"
    )
    caplog.clear()
    completed = tmp_path / "completed"
    build(make_config(*KEPT, "trainer.max_epochs=2", run_dir=completed)).run()
    assert esper.load_run(completed).status == "completed"
    assert not [r for r in caplog.records if r.name == "esper.grown"]
