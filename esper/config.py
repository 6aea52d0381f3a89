"""The shape of a run's configuration, checked before anything is built.

Errors name the dotted key and what is allowed, so a typo fails in a second, not mid-run.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from esper import blueprints

MAX_SEED = 2**32 - 1
"""The largest seed numpy's generators take (a run's `seed`, Simic's training seeds)."""

MAX_LR = 1e30
"""The largest finite learning rate taken: Adam's step divides lr by 1 - beta1 (0.1 at the
first step) and torch converts it to float32 (at most 3.4e38), which 1e38 overflowed."""


class ConfigError(ValueError):
    """Bad input, said in one line that names the key and what is allowed."""


def reason(exc: BaseException) -> str:
    """An exception's message in one line (torch's run to many), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for errors whose type says what went wrong."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def some_of(names: list[str], most: int = 3) -> str:
    """The first `most` of `names`, and how many more: a one-line message stays one line."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Targeted(BaseModel):
    """A group whose keys go to its `_target_`; the target itself checks its own keys."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    target: str = Field(alias="_target_")


def repeated(items: list[str]) -> list[str]:
    """The items given more than once, sorted: a list whose entries must be distinct."""
    return sorted({item for item in items if items.count(item) > 1})


class ModelConfig(Targeted):
    sites: list[str] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _each_site_once(cls, sites: list[str]) -> list[str]:
        """helper-found: a site listed twice held one slot, and summary.json listed it twice."""
        twice = repeated(sites)
        if twice:
            raise ValueError(
                f"model.sites lists {', '.join(map(repr, twice))} more than once; allowed: each "
                "site once (a site holds one slot)"
            )
        return sites


class TrainerConfig(Section):
    max_epochs: int = Field(ge=1)
    device: Literal["cpu", "cuda"] = "cpu"
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    progress: bool = True
    """A progress bar (epoch, loss, val accuracy, each slot's state); log lines go above it."""
    quiet: bool = False
    """For sweeps: no bar, and only warnings and errors on the console (the job's .log file
    keeps INFO)."""
    checkpoint: bool = True
    resume: str | None = None
    stop_after_epoch: int | None = Field(default=None, ge=0)
    max_nonfinite_steps: int = Field(default=20, ge=1)
    """Consecutive steps with a non-finite host loss or gradient (each skipped) before the run
    stops with status `diverged`."""
    strategy: Literal["single", "ddp"] = "single"
    """`ddp`: data-parallel over the processes torchrun starts (`torchrun --standalone
    --nproc_per_node=N run.py trainer.strategy=ddp`); rank 0 decides, every rank applies."""
    overwrite: bool = False
    """Start a new run in a run directory that already holds one (its events, summary,
    checkpoints and W&B files are removed first); without it such a directory is refused."""

    @field_validator("optimizer")
    @classmethod
    def learning_rate(cls, optimizer: dict[str, Any]) -> dict[str, Any]:
        """torch checks lr only when the trainer builds the optimizer, and compares a string
        with `<=` (a TypeError); checked here, the key is named before anything is built.
        inf was let through once, for the non-finite guard to end the run as `diverged`; but its
        first step, of finite gradients, made every weight NaN, and that epoch's checkpoint."""
        lr = optimizer.get("lr", 0.0)
        if isinstance(lr, bool) or not isinstance(lr, int | float) or math.isnan(lr) or lr < 0:
            raise ValueError(f"trainer.optimizer.lr={lr!r}: must be a number >= 0")
        if lr > MAX_LR:
            raise ValueError(
                f"trainer.optimizer.lr={lr!r}: must be at most {MAX_LR:g} (a larger one "
                "overflows float32 inside the optimizer's step, a traceback mid-training)"
            )
        return optimizer

    @model_validator(mode="after")
    def stopped_runs_resume_from_a_checkpoint(self) -> TrainerConfig:
        """helper-found: `trainer.stop_after_epoch=2 trainer.checkpoint=false` exited 0 as
        `stopped`, and its resume then found no checkpoint: the key exists to be resumed."""
        stop = self.stop_after_epoch
        if stop is not None and stop < self.max_epochs - 1 and not self.checkpoint:
            # at the last epoch or after, it never stops a run: no checkpoint is needed
            raise ValueError(
                f"trainer.stop_after_epoch={stop} with trainer.checkpoint=false: a stopped run "
                "continues from its checkpoint; allowed: trainer.checkpoint=true, or "
                f"trainer.max_epochs={stop + 1} for a shorter run"
            )
        return self

    @field_validator("device")
    @classmethod
    def available(cls, device: str) -> str:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "trainer.device='cuda': no CUDA device is available on this machine; "
                "allowed here: cpu (trainer=cpu)"
            )
        return device


class GatesConfig(Section):
    min_training_steps: int = Field(default=0, ge=0)
    max_grad_norm: float = Field(default=float("inf"), gt=0)
    fossilize_min_contribution: float | None = 0.0


class SeedsConfig(Section):
    blend_epochs: int = Field(ge=1)
    probation_epochs: int = Field(default=0, ge=0)
    """Epochs a fully blended seed trains on at alpha 1 before a rule-based verdict is due.
    Why: under `contribution=shadow` a seed judged the moment its ramp ends has rarely paid
    for itself yet; its shadow keeps training beside it through the probation."""
    embargo_epochs: int = Field(ge=0)
    latency_sample_every: int = Field(ge=1)
    fossilized: Literal["train", "freeze", "merge"] = "train"
    lr: float | None = Field(default=None, gt=0)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    contribution: Literal["bypass", "shadow"] = "bypass"
    """How a blending seed's contribution (what keep rules and the fossilize gate read) is
    measured. `bypass`: the grown model's val metric minus the same model's with the seed
    switched off. `shadow`: minus a copy of the model trained on without the seed since it
    started blending (esper.training.shadow); a culled seed's model is restored from that
    copy. Single-process runs only."""

    @field_validator("lr")
    @classmethod
    def representable_lr(cls, lr: float | None) -> float | None:
        if lr is not None and lr > MAX_LR:  # inf too: every seed culled for NaN gradients
            raise ValueError(
                f"seeds.lr={lr!r}: must be at most {MAX_LR:g} (a larger one overflows float32)"
            )
        return lr


class BlueprintsConfig(Section):
    allowed: list[str] = Field(min_length=1)
    custom: dict[str, dict[str, Any]] = Field(default_factory=dict)
    hparams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    init_seed: int = 0

    @field_validator("allowed")
    @classmethod
    def known(cls, names: list[str]) -> list[str]:
        for index, name in enumerate(names):
            blueprints.get(name, key=f"blueprints.allowed[{index}]")
        return names

    @field_validator("hparams")
    @classmethod
    def known_hparams(cls, table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, values in table.items():
            blueprints.get(name, key=f"blueprints.hparams.{name}").hparams(values)
        return table


class KernelsConfig(Section):
    async_compile: bool = True
    prewarm: bool = False
    cache_bytes: int = Field(ge=0)
    latency_batches: list[int] = Field(min_length=1)
    reference_batch: int = Field(ge=1)
    workers: int = Field(default=1, ge=1)
    wait_epochs: int | None = Field(default=1, ge=0)
    preflight: bool = True
    """Before training, build and compile every offered blueprint at every slot shape (a
    kernel the store holds costs nothing); false: a blueprint that cannot serve a slot is only
    found when a seed germinates there, and culled."""

    @field_validator("latency_batches")
    @classmethod
    def positive(cls, batches: list[int]) -> list[int]:
        if any(b < 1 for b in batches):
            raise ValueError(f"kernels.latency_batches={batches}: every batch size must be >= 1")
        return batches


class LoggerConfig(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    target: str | None = Field(default=None, alias="_target_")
    mode: Literal["offline", "online", "disabled"] = "offline"


class PathsConfig(BaseModel):
    """Where data, outputs and the local kernel store live (conf/paths/; env variables feed it)."""

    model_config = ConfigDict(extra="allow")
    root_dir: str = "."
    data_dir: str | None = None
    output_dir: str | None = None
    kernel_store_dir: str | None = None


OptimizedMetric = Literal[
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_accuracy_at_cost"
]


class RunConfig(BaseModel):
    """The whole run's configuration. Each field whose type is a model is a config group.

    Nothing else is allowed at the top level: `+sed=3` (a typo of `seed`) would otherwise be
    accepted and ignored, and the run would not be the one asked for."""

    model_config = ConfigDict(extra="forbid")
    name: str
    seed: int = Field(ge=0, le=MAX_SEED)
    """numpy seeds its generator with this: it takes 0 .. 2**32 - 1."""
    tags: list[str] = Field(default_factory=list)
    optimized_metric: OptimizedMetric = "val_accuracy"
    """What run.py returns to a sweeper; never a test metric (decisions see validation only).
    `val_accuracy_at_cost`: val accuracy less `param_cost` per 1,000 added parameters."""
    param_cost: float = Field(default=0.05, ge=0)
    """Val accuracy 1,000 seed parameters must buy (`val_accuracy_at_cost`)."""
    run_dir: str | None = None
    paths: PathsConfig = Field(default_factory=PathsConfig)
    dataset: Targeted
    model: ModelConfig
    seeds: SeedsConfig
    blueprints: BlueprintsConfig
    policy: Targeted
    storage: Targeted
    kernels: KernelsConfig
    logger: LoggerConfig
    trainer: TrainerConfig

    @model_validator(mode="after")
    def shadow_needs_one_process(self) -> RunConfig:
        if self.seeds.contribution == "shadow" and self.trainer.strategy == "ddp":
            raise ValueError(
                "seeds.contribution=shadow: single-process runs only (a shadow would need its "
                "own gradient all-reduce); with trainer.strategy=ddp use seeds.contribution=bypass"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def known_keys(cls, config: Any) -> Any:
        """An unknown top-level key is named with the keys that are allowed there. An empty
        preset (a conf/local/default.yaml holding nothing or comments alone) sets nothing
        and is let be (helper-found: it was said to lack its package line)."""
        if isinstance(config, dict):
            config = {k: v for k, v in config.items() if not (k in PRESETS and v in (None, {}))}
            for key in config:
                if key not in cls.model_fields:
                    raise ValueError(unknown_key(str(key), config[key]))
        return config


PRESETS = ("local", "experiment", "debug", "hparams_search")
"""conf/ folders whose files are `# @package _global_` presets: without that line Hydra puts
their keys under the folder's name, at the top level."""


def unknown_key(key: str, value: Any) -> str:
    if key in PRESETS:
        where = "conf/local/default.yaml" if key == "local" else f"the conf/{key}/ file chosen"
        return (
            f"{key}: {where} lacks its first line `# @package _global_`, so its keys landed "
            f"under `{key}:` and were not applied; add that line (see conf/local/example.yaml.txt)"
        )
    allowed = ", ".join(RunConfig.model_fields)
    return f"{key}={value!r}: not a configuration key; allowed at the top level: {allowed}"


GROUPS: tuple[str, ...] = tuple(
    name
    for name, info in RunConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)
"""The config groups, in the schema's order (paths, dataset, model, ..., trainer)."""

NEUTRAL_GROUPS = ("paths", "storage", "logger")
"""Groups that change where a run reads and writes, never what it computes."""

NEUTRAL_TRAINER_KEYS = (
    "progress",
    "quiet",
    "checkpoint",
    "resume",
    "stop_after_epoch",
    "overwrite",
)
"""trainer keys that say how a job ran (console, checkpoints, resuming), not what it computed:
left out of the config hash, so a quiet sweep and a run with a progress bar group together."""

RESULT_GROUPS = tuple(g for g in GROUPS if g not in (*NEUTRAL_GROUPS, "trainer"))
"""Groups that a resumed run must share with the run it continues (with trainer.optimizer and
trainer.scheduler; the rest of `trainer` says how long and where to run)."""


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


ENVIRONMENT_VALUE = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")


def from_environment(unresolved: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys whose value came from an environment variable that is set (`${oc.env:VAR,
    default}` in conf/), by key: a bad value is then blamed on the variable that gave it
    (helper-found: `WANDB_MODE=bogus` was said as `logger.mode='bogus'`, a key the user never
    wrote). `unresolved` is the configuration as a container, interpolations unresolved."""
    found: dict[str, str] = {}
    items = (
        unresolved.items()
        if isinstance(unresolved, dict)
        else enumerate(unresolved)
        if isinstance(unresolved, list)
        else ()
    )
    for name, value in items:
        key = f"{prefix}[{name}]" if isinstance(name, int) else f"{prefix}.{name}".lstrip(".")
        if isinstance(value, str):
            match = ENVIRONMENT_VALUE.match(value)
            if match and match.group(1) in os.environ:
                found[key] = match.group(1)
        else:
            found |= from_environment(value, key)
    return found


def unread_paths(settings: RunConfig, unresolved: Any) -> str | None:
    """The warning for a `paths` key of the user's own that nothing seems to refer to, or
    None. `paths` takes keys beyond Esper's four so that a config can name its own
    (`${paths.my_data}`); one that no interpolation reads is likely a misspelling
    (helper-found: `paths.data_dri` in conf/local was accepted and ignored, the data read from
    the default). A warning, not a refusal: a reference may hide where this does not look
    (helper-found: `hydra.run.dir=${paths.scratch}/run`, `${.scratch}` within `paths`, both
    refused when this refused). `unresolved`: every configuration that may refer to it
    (the job's and Hydra's), interpolations unresolved."""
    own = sorted(settings.paths.model_extra or {})
    text = str(unresolved)
    unread = [key for key in own if not re.search(rf"(paths\.|\$\{{\.+){re.escape(key)}\b", text)]
    if not unread:
        return None
    known = ", ".join(PathsConfig.model_fields)
    return (
        f"paths.{unread[0]}: not a key Esper reads ({known}), and nothing in the configuration "
        f"seems to refer to it (as ${{paths.{unread[0]}}}); a misspelling?"
    )


def validate(config: dict[str, Any], environment: dict[str, str] | None = None) -> RunConfig:
    """The run's settings, or one ConfigError naming every bad key; `environment` (from
    `from_environment`) names the variables some values came from."""
    try:
        blueprints.register_from_config((config.get("blueprints") or {}).get("custom"))
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
    try:
        return RunConfig.model_validate(config)
    except ValidationError as exc:
        raise explain(exc, environment=environment) from None


def explain(
    exc: ValidationError, prefix: tuple[str, ...] = (), environment: dict[str, str] | None = None
) -> ConfigError:
    """One line per error, naming the dotted key (under `prefix`) and what is allowed, and
    the environment variable the value came from, where it did."""
    lines = []
    for err in exc.errors():
        key = _location((*prefix, *err["loc"]))
        variable = (environment or {}).get(key)
        source = f" (from the environment variable {variable})" if variable else ""
        message = err["msg"].removeprefix("Value error, ")
        if isinstance(err.get("ctx", {}).get("error"), KeyError | ValueError):
            lines.append(f"{message}{source}")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            lines.append(f"{key}={err.get('input')!r}{source}: {message}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
