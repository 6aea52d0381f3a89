"""Non-finite updates never reach the host: a non-finite step is skipped and counted, a seed is
culled only for its own non-finite gradient, and a host that keeps diverging ends the run as
`diverged` with a clear message."""

from __future__ import annotations

import json
import math

import pytest
import torch

from esper.app import build
from esper.training.guard import Diverged, check_weights
from tests.conftest import ONE_EARLY_SEED

QUIET = ("logger=none", "trainer.checkpoint=false", "kernels.async_compile=false")


def test_an_infinite_learning_rate_ends_the_run_as_diverged(make_config, tmp_path) -> None:
    experiment = build(
        make_config(
            *QUIET,
            "policy=none",
            "trainer.optimizer.lr=1e30",
            "trainer.max_nonfinite_steps=5",
            run_dir=tmp_path / "run",
        )
    )
    with pytest.raises(Diverged, match=r"the host diverged: 5 steps in a row .* lower trainer"):
        experiment.run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["skipped_steps"] == 5
    assert "the host diverged" in summary["error"]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    assert events[-1]["kind"] == "run_ended" and events[-1]["status"] == "diverged"


def test_the_hosts_divergence_is_not_blamed_on_a_seed(make_config, tmp_path) -> None:
    """Adversarial case A74: the host went NaN with a seed in the forward pass."""
    experiment = build(
        make_config(
            *QUIET,
            *ONE_EARLY_SEED[:3],
            "kernels.wait_epochs=0",
            "trainer.optimizer.lr=1e30",
            "trainer.max_nonfinite_steps=100",  # about five epochs
            run_dir=tmp_path / "run",
        )
    )
    with pytest.raises(Diverged):
        experiment.run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    reasons = [a["reason"] for a in summary["adaptations"]]
    assert any(a["to"] == "TRAINING" for a in summary["adaptations"]), "a seed was active"
    assert not any("non-finite seed gradient" in r for r in reasons), reasons


def test_transient_non_finite_batches_are_skipped_and_counted(make_config, tmp_path) -> None:
    """The first training row turns NaN after build() checked the data (which refuses a
    dataset holding one): each epoch, the batch holding it gives a non-finite loss."""
    experiment = build(
        make_config(*QUIET, "policy=none", "trainer.max_epochs=4", run_dir=tmp_path / "run")
    )
    experiment.trainer.data.train.x[:1] = float("nan")
    record = experiment.run()
    assert record.status == "completed"
    assert record.skipped_steps == 4, "one poisoned batch an epoch"
    assert all(math.isfinite(v) for v in record.metrics.values())
    assert all(torch.isfinite(p).all() for p in experiment.trainer.model.host_parameters())


def test_weights_a_step_overflowed_are_not_checkpointed() -> None:
    """A step of finite loss and gradients can still overflow the weights (a huge rate times a
    large gradient); the epoch's checkpoint, which a resume would continue, is not written
    over the last good one: the run ends as diverged (Trainer.run_epoch checks before saving)."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    check_weights(model, epoch=4, earlier_checkpoint=True)  # finite: nothing to say
    with torch.no_grad():
        model[1].weight[0, 0] = math.inf
    with pytest.raises(Diverged, match=r"after epoch 4 .*; the checkpoint before it is kept; low"):
        check_weights(model, epoch=4, earlier_checkpoint=True)
    with pytest.raises(Diverged, match=r"after epoch 0 \(an update overflowed them\); no checkp"):
        check_weights(model, epoch=0, earlier_checkpoint=False)
