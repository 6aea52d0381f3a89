"""Checks build() runs before training: every user error is one line naming the key, not a
traceback or a seed culled mid-run.

What a schema cannot see is tried here on the real parts: the optimizer and scheduler on a
stand-in parameter, the host on the dataset's input, and every blueprint the policy may use at
every slot shape it may use it at (built, held to the blueprint contract, and compiled into a
kernel through the run's own library, so a warm store makes this free and a cold one stores
what the run will ask for).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from esper import blueprints
from esper.atomic import WriteError
from esper.config import MAX_LR, BlueprintsConfig, ConfigError, first_line, reason
from esper.data import DataSplits
from esper.kernels import KernelLibrary
from esper.kernels.compiler import failure_said
from esper.models.checks import input_mismatch
from esper.seeds import MorphogeneticModel
from esper.seeds.graph import probing
from esper.training.optim import step_scheduler


def check_optimizer(
    make_optimizer: Callable[..., Any], make_scheduler: Callable | None, epochs: int
) -> None:
    """torch checks an optimizer's values (betas, eps, weight_decay, ...) and a scheduler's
    only when the trainer builds them: build both once on a stand-in parameter now, and step
    the scheduler through the run's `epochs` as the trainer will (helper-found: StepLR's
    `step_size: 0` divided by zero, and ReduceLROnPlateau wanted a metric, each a traceback
    after the first epoch; ExponentialLR's `gamma: -1` trained on at a negative rate)."""
    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = make_optimizer([{"params": [param], "name": "host"}])
        optimizer.step()  # as the trainer steps it: no closure (helper-found: LBFGS's need
    except Exception as exc:  # noqa: BLE001 - of one was blamed on the scheduler, or crashed)
        raise ConfigError(f"trainer.optimizer: {_said(exc)}") from None
    _finite("trainer.optimizer", make_optimizer)
    if make_scheduler is None:
        return
    try:
        scheduler = make_scheduler(optimizer)
    except Exception as exc:  # noqa: BLE001 - likewise a scheduler
        raise ConfigError(f"trainer.scheduler: {_said(exc)}") from None
    _finite("trainer.scheduler", make_scheduler)
    if (
        isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        and scheduler.mode != "min"
    ):
        raise ConfigError(
            f"trainer.scheduler.mode={scheduler.mode!r}: ReduceLROnPlateau is stepped with the "
            "val loss; allowed: min"
        )
    with warnings.catch_warnings():  # "step() before optimizer.step()": nothing to train here
        warnings.simplefilter("ignore")
        for epoch in range(epochs):
            try:
                optimizer.step()
                step_scheduler(scheduler, 1.0)  # a val loss that never improves
            except Exception as exc:  # noqa: BLE001 - a user's scheduler may raise anything
                raise ConfigError(f"trainer.scheduler: at epoch {epoch}: {_said(exc)}") from None
            rate = optimizer.param_groups[0]["lr"]
            valid = isinstance(rate, int | float) and math.isfinite(rate) and 0 <= rate <= MAX_LR
            if not valid:  # helper-found: 1e36 after 36 epochs, `diverged` blamed on the lr
                raise ConfigError(
                    f"trainer.scheduler: the learning rate becomes {rate!r} after epoch {epoch}; "
                    f"allowed: a schedule whose rate stays a number from 0 to {MAX_LR:g}, as "
                    "trainer.optimizer.lr must be"
                )


def _finite(section: str, make: Callable[..., Any]) -> None:
    """torch takes inf for most settings (Adam's weight_decay, ExponentialLR's gamma,
    OneCycleLR's max_lr): the weights go NaN in the first steps and the run blames the host."""
    for key, value in getattr(make, "keywords", {}).items():  # Hydra's partial of the config
        numbers = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{section}.{key}={value}: must be a finite number")


def _said(exc: BaseException) -> str:
    """The first line of a value error as it is; any other error with its type."""
    if isinstance(exc, ValueError | TypeError) and str(exc).strip():
        return reason(exc)
    return first_line(exc)


def check_data(data: DataSplits) -> None:
    """What a dataset factory returns, checked before any model sees it (helper-found: a
    user's own factory with int32 or out-of-range labels, NaN features or an empty split
    trained into a torch traceback at the first step or the final test, or into a run that
    `completed` having trained nothing)."""
    classes = data.num_classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        raise ConfigError(
            f"dataset: num_classes={classes!r}; allowed: an integer >= 2 (the classes of y)"
        )
    for split in ("train", "val", "test"):
        loader = getattr(data, split)
        x, y = loader.x, loader.y
        for name, value in (("x", x), ("labels", y)):
            if not isinstance(value, torch.Tensor):
                kind = type(value)
                raise ConfigError(
                    f"dataset: the {split} split's {name} is a {kind.__module__}.{kind.__name__}"
                    "; allowed: a torch tensor (torch.from_numpy or torch.as_tensor)"
                )
            if value.requires_grad:  # helper-found: "backward through the graph a second time"
                raise ConfigError(
                    f"dataset: the {split} split's {name} requires grad (it is part of an "
                    "autograd graph); allowed: plain data (.detach() it)"
                )
        size = loader.batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"dataset: the {split} loader's batch_size={size!r}; allowed: >= 1")
        if len(x) == 0 or len(x) != len(y):
            said = "is empty" if len(x) == 0 else f"has {len(x)} rows of x and {len(y)} of y"
            raise ConfigError(f"dataset: the {split} split {said}")
        if tuple(x.shape[1:]) != tuple(data.input_shape):
            raise ConfigError(
                f"dataset: input_shape={list(data.input_shape)}, but the {split} split's x is "
                f"{list(x.shape)}"
            )
        if x.dtype not in (torch.float32, torch.int64):
            raise ConfigError(
                f"dataset: the {split} split's x is {str(x.dtype).removeprefix('torch.')}; "
                "allowed: float32 features, or int64 token ids"
            )
        if x.is_floating_point():
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise ConfigError(
                    f"dataset: the {split} split's x holds {bad} NaN or infinite values; "
                    "allowed: finite features"
                )
        per_position = (  # labels [N, T] for token ids [N, T] or features [N, T, D]
            tuple(y.shape) == tuple(x.shape[: y.dim()])
            and (x.dim() > y.dim() or not x.is_floating_point())
        )
        if y.dim() == 0 or (y.dim() > 1 and not per_position):
            # helper-found: labels [N, 1] were blamed on the host ("gives [B, C] ... need
            # logits [B, 1, C]")
            raise ConfigError(
                f"dataset: the {split} split's labels are {list(y.shape)} for x "
                f"{list(x.shape)}; allowed: one class index a row ({list(y.shape[:1])}: "
                "y.squeeze(-1) for [N, 1]) or one a position of x's leading dimensions "
                "([N, T] for x [N, T, ...])"
            )
        if y.dtype != torch.int64:
            raise ConfigError(
                f"dataset: the {split} split's labels are {str(y.dtype).removeprefix('torch.')}; "
                f"allowed: int64 class indices in [0, num_classes={classes})"
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ConfigError(
                f"dataset: the {split} split's labels hold {low if low < 0 else high}, outside "
                f"[0, num_classes={classes})"
            )


def check_host_output(model: MorphogeneticModel, data: DataSplits) -> None:
    """The host's output on two training rows: one tensor of logits, one row of
    `num_classes` per label (helper-found: a [B, 1, C] output reported an accuracy of 200, a
    wider head or a tuple trained or crashed at the first step), and a host with parameters to
    train (a frozen one crashed there: `element 0 of tensors does not require grad`)."""
    host = model.host
    name = getattr(host, "config_name", type(host).__name__)
    if not any(p.requires_grad for p in host.parameters()):
        raise ConfigError(
            f"model: no parameter of {name} requires a gradient; the host trains with its seeds"
        )
    x, y = data.train.x[:2], data.train.y[:2]
    with probing(host):
        out = host(x)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"model: {name} returns a {type(out).__name__}; allowed: one tensor of logits"
        )
    wanted = (*y.shape, data.num_classes)
    if tuple(out.shape) != wanted:
        raise ConfigError(
            f"model: {name} gives {_batched(out.shape)} for dataset={data.name}, whose labels "
            f"{_batched(y.shape)} need logits {_batched(wanted)} (num_classes={data.num_classes})"
        )
    probabilities = _probabilities(out)
    if probabilities:
        raise ConfigError(
            f"model: {name} returns {probabilities}; allowed: logits (the loss is "
            "cross-entropy, which applies the softmax itself: end the forward before it)"
        )


def _probabilities(out: torch.Tensor) -> str | None:
    """What a softmax ending the host's forward gives, said, or None (helper-found):
    cross-entropy of probabilities trains, slowly and to a worse model, and nothing else says
    so. A softmax over the last dimension (rows summing to 1), a scaled one (rows summing to
    the same k), or one over another dimension (the batch, a sequence: summing to 1 along
    it). Rows that are all the same are a head's initial output (zero weights and a bias of
    1/C, or of [1, 0]: logits a user may start from), not a softmax's of different inputs
    (helper-found: such a host was refused)."""
    if not out.dtype.is_floating_point or out.dim() < 2:
        return None
    values = out.detach().float()
    rows = values.reshape(-1, values.shape[-1])
    if not (values >= 0).all() or torch.allclose(rows, rows[:1].expand_as(rows)):
        return None
    sums = rows.sum(-1)
    if torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return "probabilities (each row >= 0, summing to 1)"
    # relative alone: near-zero rows (a head initialised at 1e-6) sum alike within any atol
    if sums[0] > 0 and torch.allclose(sums, sums[:1].expand_as(sums), rtol=1e-4, atol=0.0):
        return f"scaled probabilities (each row >= 0, summing to {sums[0].item():.4g})"
    for dim in range(values.dim() - 1):
        along = values.sum(dim)
        if values.shape[dim] > 1 and torch.allclose(along, torch.ones_like(along), atol=1e-4):
            if dim == 0:
                return (
                    "a softmax over dimension 0, the batch (each column >= 0, summing to 1 "
                    "over the rows)"
                )
            return f"a softmax over dimension {dim} (values >= 0, summing to 1 along it)"
    return None


def _batched(shape: tuple[int, ...] | torch.Size) -> str:
    """`[B, 5]`: a shape with its batch dimension named."""
    return "[" + ", ".join(["B", *map(str, tuple(shape)[1:])]) + "]"


def check_host_input(host: torch.nn.Module, data: DataSplits) -> None:
    """Token ids into an MLP, or floats into an embedding, fail deep inside torch otherwise."""
    mismatch = input_mismatch(host, data.train.x[:2], data.name)
    if mismatch:
        raise ConfigError(f"model: {mismatch}")


def host_cannot_take(host: torch.nn.Module, data: DataSplits, exc: BaseException) -> ConfigError:
    """The probe forward of wrap() failed on the dataset's input: say so in one line."""
    x = data.train.x
    dtype = str(x.dtype).removeprefix("torch.")
    return ConfigError(
        f"model: {type(host).__name__} cannot take dataset={data.name}'s input "
        f"({dtype} {list(x.shape[1:])}): {first_line(exc)}"
    )


def blueprint_key(settings: BlueprintsConfig, name: str) -> str:
    """The config key to blame for blueprint `name`: the hyper-parameters set away from its
    defaults, else its custom entry, else its place in `blueprints.allowed`."""
    defaults = blueprints.get(name).defaults
    changed = {k: v for k, v in (settings.hparams.get(name) or {}).items() if defaults.get(k) != v}
    if changed:
        return ", ".join(f"blueprints.hparams.{name}.{k}={v!r}" for k, v in changed.items())
    if name in settings.custom:
        return f"blueprints.custom.{name}"
    if name in settings.allowed:
        return f"blueprints.allowed[{settings.allowed.index(name)}]={name!r}"
    return f"blueprints.{name}"


def _pairs(
    settings: BlueprintsConfig, model: MorphogeneticModel, names: list[str]
) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(blueprint, slot name, shape) for each blueprint in `names` at each slot shape it fits,
    each (blueprint, shape) once."""
    seen: set[tuple[str, tuple[int, ...]]] = set()
    for slot in model.iter_slots():
        for name in blueprints.compatible(slot.shape, names):
            if (name, slot.shape) not in seen:
                seen.add((name, slot.shape))
                yield name, slot.name, slot.shape


def _contract(name: str, shape: tuple[int, ...], seed: int, hparams: dict[str, Any] | None) -> None:
    """The contract check, quietly: torch's warnings about a broken module (zero-element
    tensors, ...) would only add lines before the one error that says what is wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blueprints.check_contract(name, shape, seed, hparams)


def check_blueprints(
    settings: BlueprintsConfig,
    model: MorphogeneticModel,
    library: KernelLibrary | None,
    device: str,
) -> int:
    """Every blueprint offered at each slot shape builds, keeps the blueprint contract and,
    given a library, compiles into a kernel (export, check against eager, characterise, store).

    The library skips a kernel its store already holds, so only a cold store pays; the kernels
    compiled here are the ones the run's germinations ask for. Returns how many kernels were
    compiled here.
    """
    custom = [n for n in settings.custom if n not in settings.allowed]
    compiled = 0
    for name, slot, shape in _pairs(settings, model, [*settings.allowed, *custom]):
        hparams = settings.hparams.get(name)
        where = f"blueprint {name!r} at shape {list(shape)} (slot {slot})"
        try:
            _contract(name, shape, settings.init_seed, hparams)
        except blueprints.BlueprintContractError as exc:
            raise ConfigError(f"{blueprint_key(settings, name)}: {exc} (slot {slot})") from None
        except Exception as exc:  # noqa: BLE001 - a user's builder may raise anything
            key = blueprint_key(settings, name)
            raise ConfigError(f"{key}: {where}: cannot be built: {first_line(exc)}") from None
        if library is None or name in custom:
            continue
        spec = blueprints.kernel_spec(name, shape, hparams, settings.init_seed, device)
        if library.has(spec.key()):
            continue
        try:
            library.get(spec)
        except WriteError:  # the store is full or read-only: not the blueprint's fault
            raise
        except Exception as exc:  # noqa: BLE001 - export and validation fail in many ways
            key = blueprint_key(settings, name)
            raise ConfigError(f"{key}: {where}: cannot be exported: {failure_said(exc)}") from None
        compiled += 1
    return compiled


def check_custom_contracts(settings: BlueprintsConfig, model: MorphogeneticModel) -> None:
    """Custom blueprints keep the contract at every slot shape they fit (the check that runs
    when `kernels.preflight=false`)."""
    names = list(settings.custom)
    for name, slot, shape in _pairs(settings, model, names):
        try:
            _contract(name, shape, settings.init_seed, settings.hparams.get(name))
        except blueprints.BlueprintContractError as exc:
            raise ConfigError(f"blueprints.custom.{name}: {exc} (slot {slot})") from None
        except Exception as exc:  # noqa: BLE001 - a user's builder may raise anything
            where = f"blueprint {name!r} at shape {list(shape)} (slot {slot})"
            raise ConfigError(
                f"blueprints.custom.{name}: {where}: cannot be built: {first_line(exc)}"
            ) from None


RUN_FILES = ("summary.json", "events.jsonl", "checkpoints")
"""What a run leaves in its directory (Hydra's .hydra/ and log are written before build())."""
SIMIC_FILES = ("simic.pt", "policy.pt", "policies")
"""What a policy training (`--config-name train_policy`) leaves in its directory."""
HELD = (*RUN_FILES, *SIMIC_FILES)
"""Either kind's files: a run and a policy training refuse each other's directory too (the
second would mix its files with the first's and replace its recorded config)."""


def held_run(run_dir: Path) -> list[str]:
    """The files of an earlier run in `run_dir` (none: a fresh directory). Empty ones do not
    count: a mount point made for checkpoints/, an events.jsonl left by a build that failed."""

    def holds(path: Path) -> bool:
        if path.is_dir():
            return any(path.iterdir())
        return path.is_file() and path.stat().st_size > 0

    return [name for name in HELD if holds(run_dir / name)]


def held_runs(sweep_dir: Path) -> list[Path]:
    """The directories under `sweep_dir` that hold a run or training, at any depth
    (`hydra.sweep.subdir` may be any interpolation), sorted. A directory that holds one is not
    searched further: its checkpoints/ and wandb/ hold no other jobs."""
    found: list[Path] = []
    for here, subdirs, _ in os.walk(sweep_dir):
        if held_run(Path(here)):
            found.append(Path(here))
            subdirs.clear()
        else:
            subdirs.sort()
    return found


def check_sweep_dir(sweep_dir: Path, overwrite: bool, section: str = "trainer") -> None:
    """Refuse a sweep into a directory that holds an earlier sweep's runs, before any job
    starts: Hydra writes each job's `.hydra/` before any per-job check, so refusing job by job
    would already have replaced the earlier jobs' recorded configs. `<section>.overwrite=true`
    replaces them (each job clears its own directory). A sweep job is continued by a single
    run with the job's overrides and `<section>.resume=JOB_DIR hydra.run.dir=JOB_DIR`."""
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"hydra.sweep.dir={str(sweep_dir)!r} is a file; choose a directory")
    found = held_runs(sweep_dir)
    if not found or overwrite:
        return
    names = [str(path.relative_to(sweep_dir)) for path in found]
    shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
    raise ConfigError(
        f"hydra.sweep.dir={str(sweep_dir)!r} holds {len(found)} run{'s' * (len(found) != 1)} "
        f"already ({shown}); choose another directory (hydra.sweep.dir=...), or pass "
        f"{section}.overwrite=true to let each job replace the run in its own directory"
    )


def sweep_dirs(config: DictConfig) -> list[Path]:
    """The directories a sweep's jobs write under: `hydra.sweep.dir` as the sweep's process
    resolves it and, when it names a swept key (`out_${name}` with `name=a,b`), as each job
    resolves it (at most `MAX_SWEEP_DIRS` combinations)."""
    own = Path(str(config.hydra.sweep.dir))
    raw = str(config.hydra.sweep._get_node("dir")._value())  # unresolved: `${...}` kept
    parsed = OverridesParser.create().parse_overrides([str(o) for o in config.hydra.overrides.task])
    swept = [
        (o.key_or_group, list(o.sweep_string_iterator()))
        for o in parsed
        if o.is_sweep_override()
        and re.search(r"\$\{\s*" + re.escape(o.key_or_group) + r"\s*\}", raw)
    ]
    if not swept:
        return [own]
    dirs = {own}
    combinations = itertools.product(*(values for _, values in swept))
    for values in itertools.islice(combinations, MAX_SWEEP_DIRS):
        job = copy.deepcopy(config)
        with open_dict(job):
            for (key, _), value in zip(swept, values, strict=True):
                OmegaConf.update(job, key, value, force_add=True)
        dirs.add(Path(str(job.hydra.sweep.dir)))
    return sorted(dirs)


MAX_SWEEP_DIRS = 1000
"""The most job directories `sweep_dirs` resolves (each a copy of the configuration)."""


def resumed_dir(resume: str) -> Path:
    """The run directory of a resume (a run directory, a run's checkpoints/ file, or a policy
    training's simic.pt)."""
    path = Path(resume).expanduser()
    if path.is_file():
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path


def check_run_dir(
    run_dir: Path,
    resume: str | None,
    overwrite: bool,
    section: str = "trainer",
) -> bool:
    """Refuse to start a run in a directory that holds another run or policy training: its
    checkpoint and summary would be overwritten and its events.jsonl would mix two runs (a
    policy training's `section` is `simic`). Resuming into the directory of the checkpoint goes
    on with that run, and is allowed. Returns whether the earlier run's files must be removed
    first (`<section>.overwrite=true`)."""
    found = held_run(run_dir)
    if not found:
        return False
    if resume is not None and resumed_dir(resume).resolve() == run_dir.resolve():
        if overwrite:
            raise ConfigError(
                f"{section}.overwrite=true with {section}.resume={resume!r} would remove the "
                "checkpoint the resume continues; pass one of them"
            )
        return False
    if overwrite:
        return True
    own_kind = SIMIC_FILES if section == "simic" else RUN_FILES
    if not set(found) & set(own_kind):  # helper-found: a resume was offered, and failed
        other = "a run" if section == "simic" else "a policy training"
        raise ConfigError(
            f"run_dir={str(run_dir)!r} holds {other} ({', '.join(found)}), not this kind; "
            f"choose another directory (hydra.run.dir=...), or {section}.overwrite=true to "
            "replace it"
        )
    raise ConfigError(
        f"run_dir={str(run_dir)!r} holds a run already ({', '.join(found)}); choose another "
        f"directory (hydra.run.dir=...), pass {section}.resume={str(run_dir)!r} to continue "
        f"it, or {section}.overwrite=true to replace it"
    )


_LOG_STARTS: dict[Path, int] = {}
"""Where this process's lines begin in each job log (`run.log`) of a run directory that
`overwrite=true` may replace: measured by `RunDirGuard` before Hydra's logging opens them."""


def _mark_job_logs() -> None:
    """The size of each file Hydra's job logging appends to (the root logger's file handlers:
    `run.log`, a sweep job's too), before this job writes to it. Only those: helper-found, a
    user's own `notes.log` beside them was emptied too."""
    import logging

    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            path = Path(handler.baseFilename)
            with contextlib.suppress(OSError):
                _LOG_STARTS[path.resolve()] = path.stat().st_size


def _cut_logs(run_dir: Path) -> None:
    """The replaced run's lines out of each job log, this run's kept (in place: Hydra's file
    handler appends to the same file). helper-found: run.log held three runs' result tables
    beside one summary.json."""
    for path, start in list(_LOG_STARTS.items()):
        if path.parent != run_dir.resolve() or not path.is_file():
            continue
        with path.open("r+b") as log_file:
            log_file.seek(start)
            ours = log_file.read()
            log_file.seek(0)
            log_file.write(ours)
            log_file.truncate()
        del _LOG_STARTS[path]


def clear_run(run_dir: Path) -> None:
    """Remove an earlier run's or training's files (`overwrite=true`), W&B's with them, and
    its lines in the job log."""
    for name in (*HELD, "weights", "wandb", "learning_curve.png"):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    _cut_logs(run_dir)


def check_simic_resume(config: DictConfig) -> None:
    """A policy training's resume, checked before Hydra records the new command in `.hydra/`:
    a refused resume into its own directory must leave the run's recorded config as it was."""
    from esper.simic.settings import SimicConfig
    from esper.simic.train import resume_state

    try:
        settings = SimicConfig.model_validate(OmegaConf.to_container(config.simic, resolve=True))
    except Exception:  # noqa: BLE001 - run.py says what is wrong with the settings
        return
    resume_state(settings)


def check_sweep_objective(direction: Any, metric: Any) -> None:
    """A job returns one objective (`optimized_metric`): a sweeper asked for several (Optuna's
    `direction` a list of two) failed every trial once it had trained (`Return value must be a
    list`), and the sweep exited 0 with no solution (helper-found). And one that would search
    for the worst model: `hydra/sweeper=esper_optuna` alone minimizes, and the default
    objective is an accuracy (helper-found: it ran, and reported the least accurate trial)."""
    if OmegaConf.is_list(direction) and len(direction) != 1:
        raise ConfigError(
            f"hydra.sweeper.direction={list(direction)}: a job returns one objective "
            f"(optimized_metric={metric}); give one direction, maximize or minimize"
        )
    if direction is None or metric is None:
        return
    (one,) = direction if OmegaConf.is_list(direction) else (direction,)
    sense = str(one).rsplit(".", 1)[-1].lower()  # `minimize`, or Optuna's enum by name
    right = "minimize" if str(metric).endswith("loss") else "maximize"
    if sense in ("minimize", "maximize") and sense != right:
        raise ConfigError(
            f"hydra.sweeper.direction={sense} with optimized_metric={metric} would search "
            f"for the worst model (Optuna's sweeper minimizes unless told); pass "
            f"hydra.sweeper.direction={right}"
        )


def claim_timestamped_dir(config: DictConfig, key: str, reused: Path | None = None) -> Path | None:
    """Claim `hydra.<key>.dir` (`run` or `sweep`) with an exclusive mkdir when its name is a
    time (`${now:...}`, as the default's `%H-%M-%S-%f`); one claimed already gets `-2`, `-3`,
    ... in its place. Two runs started together (a script's `&`, two terminals) can resolve
    the same microsecond: both wrote into one directory, and one's summary.json failed (ENOENT:
    the other's rename had taken its temporary file). A directory named without a time, one
    asked to be reused (`overwrite`; `reused`, the directory a resume continues; a torchrun's
    shared run id), is the user's to share.

    A sweep's jobs compose their configuration again from the overrides, so the new sweep
    directory is added to them as `hydra.sweep.dir=...` (where no override can say the path
    exactly, nothing is claimed). Returns the directory this call made (empty: its caller
    removes it if the run is refused), or None."""
    node = config.hydra[key]
    try:
        raw = str(node._get_node("dir")._value())
        wanted = Path(str(node.dir))
    except Exception:  # noqa: BLE001 - a config that does not resolve: build() says why
        return None
    if "${now:" not in raw or (key == "run" and "TORCHELASTIC_RUN_ID" in os.environ):
        return None
    if wanted.name in ("", ".", "..") or (reused and reused.resolve() == wanted.resolve()):
        return None
    claimed, number = wanted, 1
    try:
        wanted.parent.mkdir(parents=True, exist_ok=True)
        while True:
            override = _sweep_dir_override(claimed) if key == "sweep" else None
            if key == "sweep" and override is None:
                return None
            try:
                claimed.mkdir()
                break
            except FileExistsError:
                number += 1
                claimed = wanted.with_name(f"{wanted.name}-{number}")
    except OSError:
        return None  # read-only, a file in the way: Hydra's mkdir or build() says why
    if claimed != wanted:
        with read_write(config.hydra), open_dict(config.hydra):
            node.dir = str(claimed)
            if override is not None:
                config.hydra.overrides.hydra.append(override)
    return claimed


def _sweep_dir_override(path: Path) -> str | None:
    """`hydra.sweep.dir=<path>` that Hydra's grammar reads back as exactly `path` (checked by
    parsing it), or None: a `$` would be read as an interpolation."""
    text = str(path)
    if "$" in text:
        return None
    for quote in ("'", '"'):
        if quote in text:
            continue
        # in a quoted string a backslash escapes only a quote: double those before the last
        doubled = text + text[len(text.rstrip("\\")) :]
        override = f"hydra.sweep.dir={quote}{doubled}{quote}"
        try:
            (parsed,) = OverridesParser.create().parse_overrides([override])
        except Exception:  # noqa: BLE001 - the grammar refused it: try the other quote
            continue
        if parsed.value() == text:
            return override
    return None


def _unclaim(claimed: Path | None) -> None:
    """A refused run or sweep leaves no empty directory of its own behind (helper-found)."""
    if claimed is not None:
        with contextlib.suppress(OSError):  # not empty: something else wrote there
            claimed.rmdir()


_claimed_sweep_dir: Path | None = None
"""The sweep directory this process claimed, for a sweeper that refuses to start after the
claim (`refuse_sweep`)."""


def refuse_sweep(message: str) -> SystemExit:
    """A sweeper that cannot start (its Optuna storage cannot be opened): one line, the sweep
    directory claimed for it removed while still empty; raise what this returns."""
    _unclaim(_claimed_sweep_dir)
    print(f"esper: {message}", file=sys.stderr)
    return SystemExit(2)


class RunDirGuard(Callback):
    """conf/hydra/default.yaml's callback: `check_run_dir` on Hydra's run directory before
    Hydra writes `.hydra/` there, which would replace the earlier run's recorded config (build()
    checks again, for runs started without Hydra); `check_sweep_dir` on a sweep's directory
    and `check_sweep_objective` before any of its jobs starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        section = "simic" if "simic" in config else "trainer"
        try:
            dirs = sweep_dirs(config)
            overwrite = (config.get(section) or {}).get("overwrite")
            direction = config.hydra.sweeper.get("direction")
        except Exception:  # noqa: BLE001 - a config that does not resolve: build() says why
            return
        claimed = None
        try:
            check_sweep_objective(direction, config.get("optimized_metric"))
            if overwrite is not True and len(dirs) == 1:  # not one naming a swept key
                claimed = claim_timestamped_dir(config, "sweep")
                global _claimed_sweep_dir  # noqa: PLW0603 - one sweep a process
                _claimed_sweep_dir = claimed
                dirs = [Path(str(config.hydra.sweep.dir))]
            for sweep_dir in dirs:
                check_sweep_dir(sweep_dir, overwrite is True, section)
            from esper.sweep_check import check_sweep_jobs  # imports esper.app, which needs us

            check_sweep_jobs(config)
        except ConfigError as exc:
            _unclaim(claimed)
            print(f"esper: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A run or a sweep's job that may replace an earlier one (`overwrite=true`): where
        its lines begin in the job log, which Hydra has opened and not yet written to."""
        section = "simic" if "simic" in config else "trainer"
        with contextlib.suppress(Exception):  # a config that does not resolve: build() says why
            if (config.get(section) or {}).get("overwrite") is True:
                _mark_job_logs()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0":
            return  # torchrun's other ranks share rank 0's directory and write nothing there
        section = "simic" if "simic" in config else "trainer"
        try:
            run_dir = Path(str(config.hydra.run.dir))
            settings = config.get(section) or {}
            resume, overwrite = settings.get("resume"), settings.get("overwrite")
        except Exception:  # noqa: BLE001 - a config that does not resolve: build() says why
            return
        resume = None if resume is None else str(resume)
        claimed = None
        if overwrite is not True:
            reused = None if resume is None else resumed_dir(resume)
            claimed = claim_timestamped_dir(config, "run", reused)
            run_dir = Path(str(config.hydra.run.dir))
        try:
            check_run_dir(run_dir, resume, overwrite is True, section)
            if section == "simic" and resume is not None:
                check_simic_resume(config)
        except ConfigError as exc:
            _unclaim(claimed)
            print(f"esper: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


class Preset(NamedTuple):
    """What `preset_that_set` found."""

    name: str
    """`experiment=eval_digits_cnn` (and what it went through to set the key)."""
    also: list[str]
    """The other groups it chose that the command line left (`dataset=digits`, ...)."""
    choice: str
    """The group's choice in this run (`mlp`), which does not take the key."""


def preset_that_set(group: str, key: str) -> Preset | None:
    """The preset (`experiment=eval_digits_cnn`, any config whose package is `_global_`) that
    set `group.key`, where Hydra composed this run, and the other groups it chose that the
    command line left as it set them (`dataset=digits`, ...); None elsewhere or where none
    did.

    helper-found: `experiment=eval_digits_cnn model=mlp` said only `MLP.__init__() got an
    unexpected keyword argument 'channels'`: the preset's `model.channels`, written for the
    CNN, which the command line never named. The defaults list Hydra composed is read, so a
    preset that includes another (`defaults: [eval_digits_cnn]`) is found through it."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return None
    hydra = HydraConfig.get()
    with contextlib.suppress(Exception):  # Hydra's internals, read only to word a hint
        task = list(hydra.overrides.task)
        named = {o.key_or_group for o in OverridesParser.create().parse_overrides(task)}
        if f"{group}.{key}" in named:
            return None  # the command line set (or dropped) it (helper-found: named the preset)
        loader = GlobalHydra.instance().config_loader()
        overrides = [*hydra.overrides.hydra, *task]  # hydra.searchpath among the first
        mode = RunMode.MULTIRUN if hydra.mode == RunMode.MULTIRUN else RunMode.RUN
        composed = loader.compute_defaults_list(hydra.job.config_name, overrides, mode).defaults
        # the config sources this run was composed from, with the command line's searchpath
        from hydra._internal.config_repository import CachingConfigRepository

        repository = CachingConfigRepository(loader.repository)  # type: ignore[attr-defined]
        parsed = OverridesParser.create().parse_overrides(overrides)
        loader._process_config_searchpath(hydra.job.config_name, parsed, repository)  # type: ignore[attr-defined]
        by_path = {d.config_path: d for d in composed}
        setter = None
        for default in composed:  # in composition order: the last to set it wins
            path = default.config_path
            if default.primary or default.package != "" or path is None:
                continue  # only presets: their package is _global_ ("")
            loaded = repository.load_config(path)
            section = OmegaConf.select(loaded.config, group) if loaded is not None else None
            if isinstance(section, DictConfig) and key in section:
                setter = default
        if setter is None:
            return None
        chain = [setter]  # the preset the command line chose, and what it included
        while chain[-1].parent in by_path and not by_path[chain[-1].parent].primary:
            chain.append(by_path[chain[-1].parent])
        chosen_group, _, choice = chain[-1].config_path.partition("/")
        said = f"{chosen_group}={choice}"
        if len(chain) > 1:
            said += ", through " + ", ".join(d.config_path for d in chain[-2::-1])
        also = []
        for default in chain:
            loaded = repository.load_config(default.config_path)
            for item in (loaded.defaults_list or []) if loaded is not None else []:
                other = str(getattr(item, "group", "") or "").lstrip("/")
                choice = str(hydra.runtime.choices.get(other))
                chosen = getattr(item, "override", False) and item.get_name() == choice
                if chosen and other not in (group, *named) and f"{other}={choice}" not in also:
                    also.append(f"{other}={choice}")
        return Preset(said, also, str(hydra.runtime.choices.get(group)))
    return None
