"""Checkpoints: written atomically every epoch, read back without unpickling any object.

A checkpoint holds tensors and plain Python values only (dicts, lists, tuples, str, numbers,
None), so it is loaded with `torch.load(weights_only=True)`: a crafted file cannot run code.
Resuming also demands the configuration of the run it continues, key by key.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.atomic import ReadError, load_torch, save_torch
from esper.config import RESULT_GROUPS, ConfigError, first_line, some_of

FORMAT = "esper-checkpoint/1"
PARTS = (
    "format",
    "config",
    "epoch",
    "step",
    "model",
    "slots",
    "optimization",
    "control",
    "record",
    "loop",
    "rng",
    "wandb_run_id",
)
RESUME_MUST_MATCH = ("seed", *RESULT_GROUPS)
HOW_NOT_WHAT = tuple(
    f"{key}:"
    for key in (
        "dataset.loader_seed",
        "kernels.preflight",
        "kernels.async_compile",
        "kernels.prewarm",
        "kernels.workers",
        "kernels.cache_bytes",
    )
)
"""Keys that change how a run gets its kernels or data, never what it computes: a resumed
run may set them differently."""


def save(state: dict[str, Any], path: Path) -> Path:
    """The run's state with its format header, written atomically (see esper.atomic)."""
    return save_torch({"format": FORMAT, **state}, path)


def checkpoint_path(resume: str) -> Path:
    path = Path(resume).expanduser()
    return path if path.is_file() else path / "checkpoints" / "last.pt"


def load(resume: str, key: str = "trainer.resume") -> tuple[Path, dict[str, Any]]:
    """The checkpoint at `resume` (a run directory or a file), checked to be one of ours;
    `key` is what the messages blame."""
    path = checkpoint_path(resume)
    if not path.is_file():
        raise ConfigError(f"{key}={resume!r}: no checkpoint at {path}")
    try:
        state = load_torch(path)
    except ReadError as exc:
        raise ConfigError(f"{key}={resume!r}: not a valid Esper checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{key}={resume!r}: not a valid Esper checkpoint (no {FORMAT} header)")
    missing = [p for p in PARTS if p not in state]
    if missing:
        raise ConfigError(
            f"{key}={resume!r}: not a valid Esper checkpoint (missing {', '.join(missing)})"
        )
    return path, state


@contextlib.contextmanager
def read_as_checkpoint(key: str, resume: str) -> Iterator[None]:
    """Reading a loaded checkpoint's parts (slots, weights, counters): a part that is not as
    Esper wrote it is one line naming the file, not the KeyError or state-dict traceback it
    raises where it is read (helper-found: a slot missing, a weight of another shape, a
    lifecycle state that is no state)."""
    try:
        yield
    except ConfigError:
        raise
    except WeightsMismatch as exc:
        raise ConfigError(f"{key}={resume!r}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ConfigError(
            f"{key}={resume!r}: not a valid Esper checkpoint ({type(exc).__name__}: "
            f"{first_line(exc)})"
        ) from exc


class WeightsMismatch(ValueError):
    """A checkpoint's weights that do not fit the model built now, said by name."""


def load_weights(model: torch.nn.Module, weights: Any) -> None:
    """`model.load_state_dict(weights)`, or WeightsMismatch naming the weights the model has
    and the checkpoint lacks, the other way round, and those of another shape (helper-found:
    a host class edited since the run was said as "not a valid Esper checkpoint
    (RuntimeError: Error(s) in loading state_dict for MorphogeneticModel:)", no name given)."""
    if not isinstance(weights, dict):
        raise TypeError(f"its weights are a {type(weights).__name__}, not a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [
        f"{k} {list(weights[k].shape)} there, {list(v.shape)} here"
        for k, v in own.items()
        if isinstance(weights.get(k), torch.Tensor) and weights[k].shape != v.shape
    ]
    said = [
        *([f"the model has {some_of(missing)}, which the checkpoint lacks"] if missing else []),
        *(
            [f"the checkpoint has {some_of(unexpected)}, which the model lacks"]
            if unexpected
            else []
        ),
        *([f"of another shape: {some_of(reshaped)}"] if reshaped else []),
    ]
    if said:
        raise WeightsMismatch(
            f"the checkpoint's weights do not fit the model built now ({'; '.join(said)}): "
            "the host's code differs from the run's, or the checkpoint is damaged"
        )
    model.load_state_dict(weights)


def _differences(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}.{k}")]
    return [] if a == b else [f"{prefix}: checkpoint {a!r}, this run {b!r}"]


def check_same_config(resume: str, saved: dict[str, Any], container: dict[str, Any]) -> None:
    """A resumed run must be configured like the run it continues (loader seed excepted)."""
    diffs = []
    for key in (*RESUME_MUST_MATCH, "trainer.optimizer", "trainer.scheduler"):
        section, _, sub = key.partition(".")
        old, new = saved.get(section), container.get(section)
        if sub:
            old, new = (old or {}).get(sub), (new or {}).get(sub)
        diffs += _differences(old, new, key)
    diffs = [d for d in diffs if not d.startswith(HOW_NOT_WHAT)]
    if diffs:
        raise ConfigError(
            f"trainer.resume={resume!r}: resume with the configuration of the run it continues; "
            "these differ:\n  " + "\n  ".join(diffs)
        )


def check_epochs_left(
    resume: str, epoch: Any, max_epochs: int, stop_after_epoch: int | None = None
) -> None:
    """A resume trains on from the epoch after the checkpoint's (`epoch`, counted from 0):
    with none left it trained nothing and said `completed` (helper-found; a policy training's
    resume is refused alike). A stop at an epoch the run has passed trained one more epoch
    and said `stopped` (helper-found)."""
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return
    if epoch + 1 >= max_epochs:
        raise ConfigError(
            f"trainer.resume={resume!r}: the run resumed has trained {epoch + 1} epochs, and "
            f"trainer.max_epochs={max_epochs} leaves none to train; allowed: "
            f"trainer.max_epochs={epoch + 2} or more (the grown model: esper.load_run)"
        )
    if stop_after_epoch is not None and stop_after_epoch <= epoch:
        raise ConfigError(
            f"trainer.stop_after_epoch={stop_after_epoch} with trainer.resume={resume!r}: the "
            f"run resumed has trained epochs 0 to {epoch} already; allowed: "
            f"trainer.stop_after_epoch={epoch + 1} or more, or null"
        )


def check_same_data(
    key: str, resume: str, saved: dict[str, str] | None, now: dict[str, str], what_to_do: str
) -> None:
    """The dataset built now is the one the checkpointed run used, split by split
    (`DataSplits.digest`); a checkpoint written before digests were kept (`saved` None)
    passes."""
    if saved is None:
        return
    changed = [split for split in now if saved.get(split) != now[split]]
    if changed:
        raise ConfigError(
            f"{key}={resume!r}: the dataset differs from the run's (the {', '.join(changed)} "
            f"split{'s' if len(changed) > 1 else ''} now hold{'' if len(changed) > 1 else 's'} "
            f"other data than when the run checkpointed); {what_to_do}"
        )


def rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """Every random stream the run draws from, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy state is (name, keys, pos, gauss, cached)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
        "train_loader": loader_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    loader_generator.set_state(state["train_loader"])
