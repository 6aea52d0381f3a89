"""load_run(run_dir): a finished (or interrupted) run's grown model, outside the run.

A grown model is the host plus the seeds it kept: its `state_dict()` alone does not load into
a freshly wrapped host, whose slots are dormant and hold no seed modules (helper-found: the
researcher had no way back to the model a run grew but `trainer.resume`, which trains on).
`load_run` rebuilds it from the run's checkpoint: the run's own configuration (kept in the
checkpoint) composes the dataset and host, each slot gets its lifecycle state and the kernel
it held from the run's kernel store (the same kernel, by id, or refused), then the weights.

    run = esper.load_run("outputs/runs/2026-12-07/11-02-03-123456-esper")
    run.model(run.data.test.x[:8]).argmax(-1)
    esper.training.steps.evaluate(run.model, run.data.test, torch.device("cpu"))
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from esper.app import build_model, make_library, own_random_state, seed_everything
from esper.config import ConfigError, RunConfig, validate
from esper.data import DataSplits
from esper.seeds import MorphogeneticModel, SeedSlot
from esper.training import checkpoint
from esper.training.attachment import checkpointed_kernel, run_kernel_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    """What `load_run` gives back."""

    model: MorphogeneticModel
    """The host with the seeds the run held at its checkpoint, in eval mode, on the CPU."""
    data: DataSplits
    """The run's dataset, split as the run split it (its seed)."""
    settings: RunConfig
    """The run's validated configuration."""
    epoch: int
    """The last epoch the checkpoint holds (0-based)."""
    checkpoint: Path
    """The file loaded."""
    status: str | None = None
    """The run's status as its summary.json says it (completed, interrupted, diverged,
    failed), or None where there is none beside the checkpoint. A run that diverged or failed
    is loaded as its last checkpoint left it, and said so in a warning (helper-found: a
    diverged run's model, of weights near 1e30, came back without a word)."""


def load_run(run: str | Path, check_data: bool = True) -> LoadedRun:
    """The model a run grew, from its checkpoint (`run`: a run directory, whose
    `checkpoints/last.pt` is read, or a checkpoint file). Runs with `trainer.checkpoint=false`
    keep none. The kernels come from the store the run used (its configuration, resolved when
    the run started, is kept in the checkpoint; a kernel missing there is compiled again,
    into it); a library that now gives another kernel for a slot's spec is refused, as a
    resume is. The dataset is built again by its factory, and refused if its splits are not
    the ones the run checkpointed (their digests differ): the model would be the run's, its
    numbers on them not. `check_data=False` loads the model with the data as it is now.
    The model is built on the CPU, with the CPU's
    kernels: a run trained on a GPU held the GPU's, and is refused so (not tested here: this
    project's CI has no GPU)."""
    key = "load_run"
    run_dir = Path(run).expanduser()
    if (run_dir / "summary.json").is_file() and not checkpoint.checkpoint_path(str(run)).is_file():
        raise ConfigError(
            f"{key}={str(run)!r}: the run kept no checkpoint (trainer.checkpoint=false); "
            "its grown model is not on disk"
        )
    path, state = checkpoint.load(str(run), key=key)
    container = state["config"]
    if not isinstance(container, dict):
        raise ConfigError(f"{key}={str(run)!r}: not a valid Esper checkpoint (no configuration)")
    settings = validate(container)
    with own_random_state():
        seed_everything(settings.seed)  # a user's dataset factory may draw from it
        data, model = build_model(settings, container)
    if check_data:
        checkpoint.check_same_data(
            key,
            str(run),
            state.get("data"),
            data.digest(),
            "the model is the run's, its numbers on this data would not be; "
            "load_run(..., check_data=False) loads it with the data as it is now",
        )
    library = make_library(settings, container)

    def kernel_for(slot: SeedSlot, blueprint: str, kernel_id: str) -> torch.nn.Module:
        spec = run_kernel_spec(settings.blueprints, blueprint, slot.shape, "cpu")
        return checkpointed_kernel(library, spec, kernel_id, slot.name, key).module

    with checkpoint.read_as_checkpoint(key, str(run)):
        try:
            model.restore_slots(state["slots"], kernel_for)
        finally:
            library.close()
        checkpoint.load_weights(model, state["model"])
        epoch = int(state["epoch"])
    model.eval()
    status = _status(path)
    if status in ("diverged", "failed"):
        log.warning(
            "load_run=%r: the run %s (its summary.json); this is its model as the checkpoint "
            "of epoch %d left it",
            str(run),
            status,
            epoch,
        )
    return LoadedRun(model, data, settings, epoch, path, status)


def _status(checkpoint_file: Path) -> str | None:
    """The status in the summary.json of the run that wrote `checkpoint_file`
    (<run>/checkpoints/last.pt), or None where there is no readable one."""
    try:
        summary = json.loads((checkpoint_file.parent.parent / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    status = summary.get("status") if isinstance(summary, dict) else None
    return status if isinstance(status, str) else None
