"""What run.py does with its arguments before Hydra reads them: the flags go first (argparse
takes one run of overrides, so a `-m` between two was an error), and the mistakes whose only
message is Hydra's, a message that names neither the cause nor the way out, are said in one
line.

A sweep function (`range`, `choice`, `interval`, ...) inside a dict or list value, as in
`hydra.sweeper.params={policy.patience:range(1,3)}`, parses: Hydra's grammar reads the inner
call as a sweep object, and merging it into the configuration then fails with `Unexpected type
annotation: Set[str] ... object_type=RangeSweep`. A sweep is a whole argument of its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Sweep
from hydra.errors import CompactHydraException


class JobRefused(CompactHydraException):
    """A sweep job's refusal (its one line, said already), as the launcher hands it back to
    Hydra: a compact exception is said as its message, where any other exception came with
    its traceback after Hydra's "Error executing job with overrides" (helper-found: a bad
    value in a sweep printed the right line, then `Traceback ... raise exc from None ...
    esper.config.ConfigError`). Defined here, not in run.py: a joblib or Ray worker pickles
    it back by reference."""


def flags_first(arguments: Sequence[str]) -> list[str]:
    """`arguments` with Hydra's flags (and their values) before the overrides, each in its
    order. argparse takes one run of overrides: `python run.py seed=0,1 -m debug=fast` was
    `run.py: error: unrecognized arguments: debug=fast` (helper-found)."""
    flags, overrides, last = _split(arguments)
    return [*flags, *overrides, *last]


def _split(arguments: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(Hydra's flags with their values, the overrides, what stays last), as Hydra's own
    argument parser reads them: a flag's value is the next argument where the flag takes one
    (`-cn NAME`; `--info`'s only where it is one of its choices); argparse takes a long flag
    abbreviated (`--config-na`) and a value after `=` (`--cfg=job`). Last, in their order: a
    flag whose value is missing (argparse says so, as before), an optional value's flag
    without it (`--info` alone: in front it would take the first override as its value;
    helper-found), and everything from a `--` on."""
    flags: list[str] = []
    overrides: list[str] = []
    last: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if argument == "--":
            last.extend(arguments[index - 1 :])
            break
        if not argument.startswith("-"):
            overrides.append(argument)
            continue
        action = _action_of(argument)
        if "=" in argument or action is None:
            flags.append(argument)  # argparse says what is wrong with an unknown flag
            continue
        following = arguments[index] if index < len(arguments) else None
        given = following is not None and (
            action.nargs is None or (action.nargs == "?" and following in (action.choices or ()))
        )
        if action.nargs in (None, "?") and not given:
            last.append(argument)
        elif given:
            flags.extend((argument, str(following)))
            index += 1
        else:
            flags.append(argument)
    return flags, overrides, last


def _parsed(overrides: Sequence[str]) -> list[tuple[str, Override]]:
    """Each override as Hydra parses it, beside its text; those Hydra's grammar refuses are
    left out (Hydra says what is wrong with them)."""
    parser = OverridesParser.create()
    parsed = []
    for argument in overrides:
        try:
            (override,) = parser.parse_overrides([argument])
        except Exception:  # noqa: BLE001 - any grammar error
            continue
        parsed.append((argument, override))
    return parsed


def _action_of(flag: str) -> argparse.Action | None:
    """Hydra's argparse action for `flag` (`--cfg=job`, an abbreviated `--config-na`), or None
    for an unknown or ambiguous one."""
    from hydra._internal.utils import get_args_parser

    name = flag.split("=", 1)[0]
    matches = {
        id(action): action
        for option, action in get_args_parser()._option_string_actions.items()
        if option == name or (name.startswith("--") and len(name) > 2 and option.startswith(name))
    }
    return next(iter(matches.values())) if len(matches) == 1 else None


def unsupported_flag(arguments: Sequence[str]) -> str | None:
    """The line refusing a Hydra flag Esper cannot honour, or None. `--experimental-rerun`
    calls the job with the pickled config alone, without Hydra's run directory or its
    `${hydra:...}` resolver: a traceback (`Unsupported interpolation type hydra`,
    helper-found)."""
    flags, _, last = _split(arguments)
    for flag in (*flags, *last):
        action = _action_of(flag) if flag.startswith("-") else None
        if action is not None and action.dest == "experimental_rerun":
            return (
                "--experimental-rerun: not supported (Hydra reruns a job without its run "
                "directory); run the job's overrides again (its .hydra/overrides.yaml), or "
                "continue it with trainer.resume=<its run directory> (simic.resume=, a policy training's)"
            )
    return None


def _modes(arguments: Sequence[str]) -> set[str]:
    """The run modes Hydra's flags in `arguments` ask for: `run`, `multirun`, `cfg`, `info`,
    `shell_completion`."""
    flags, overrides, last = _split(arguments)
    modes = set()
    for flag in (*flags, *last):
        action = _action_of(flag) if flag.startswith("-") else None
        if action is not None and action.dest in MODES:
            modes.add(action.dest)
    for _, override in _parsed(overrides):  # `hydra.mode=MULTIRUN` sweeps as -m does
        if override.key_or_group == "hydra.mode" and str(override.value()).upper() == "MULTIRUN":
            modes.add("multirun")
    return modes


PRESET_GROUPS = ("experiment", "hparams_search", "debug")
"""Groups whose options are `# @package _global_` presets (esper.config.PRESETS less local)."""
MODES = ("run", "multirun", "cfg", "info", "shell_completion")
"""Hydra's mutually exclusive modes, by argparse destination."""


def conflicting_choices(arguments: Sequence[str], groups: Iterable[str]) -> str | None:
    """The line refusing a combination that Hydra would run otherwise than meant, or refuse
    with a traceback, or None (each helper-found): `--cfg job -m` was Hydra's `ValueError`
    traceback; `hparams_search=X` without `-m` ran one ordinary run without a word (a search
    is a sweep); `experiment=a experiment=b` dropped `a` without a word (a group takes one
    option)."""
    modes = _modes(arguments)
    if len(modes) > 1:
        shown = ", ".join(f"--{m.replace('_', '-')}" for m in sorted(modes))
        return (
            f"{shown}: one at a time (Hydra runs one mode); --cfg job prints the configuration "
            "a run composes, -m sweeps"
        )
    _, overrides, _ = _split(arguments)
    from hydra.core.override_parser.types import OverrideType

    chosen: dict[str, list[str]] = {}
    for argument, override in _parsed(overrides):
        if override.type != OverrideType.CHANGE:
            continue  # `~policy` deletes the choice, `+group=...` adds one: each meant
        if override.value() in (None, "null"):
            continue  # no option: nothing chosen
        if override.key_or_group in groups and override.package is None:
            chosen.setdefault(override.key_or_group, []).append(argument)
    for group, given in chosen.items():
        # a preset twice: presets do not combine, and the first was dropped without a word.
        # Another group's last choice winning is Hydra's rule, which a script that appends
        # its overrides to a base set relies on (`logger=none ... logger=wandb`)
        if len(given) > 1 and group in PRESET_GROUPS:
            return (
                f"{' '.join(given)}: {group} given {len(given)} times; presets do not combine "
                f"(the last would win, the others dropped without a word): give one, or "
                f"sweep them with -m {group}=a,b"
            )
    search = chosen.get("hparams_search")
    if search and not modes:
        return (
            f"{search[0]}: a search is a sweep; run it with -m (python run.py -m {search[0]} "
            "...), or --cfg job to see what one trial composes"
        )
    return None


def sweep_under_torchrun(arguments: Sequence[str], environment: Mapping[str, str]) -> str | None:
    """The line refusing `-m` in a process torchrun started, or None: every rank ran the
    sweep, each in a sweep directory of its own, and the second job hung in the process
    group's set-up for its ten minutes, its ranks deaf to SIGTERM (helper-found)."""
    world = environment.get("WORLD_SIZE", "")
    if "multirun" not in _modes(arguments) or not (world.isdigit() and int(world) > 1):
        return None  # one process (a platform may set RANK and WORLD_SIZE=1 for one replica)
    return (
        f"-m under torchrun ({world} processes): one run per torchrun launch; sweep without "
        "torchrun (python run.py -m ...), or launch torchrun once per configuration"
    )


def broken_local_config(conf: Path) -> str | None:
    """The line naming a conf/local/default.yaml that is not YAML (where and what), or None:
    it is the one config file a user writes by hand, and Hydra's answer was a 97-line
    traceback ending in yaml's ParserError (helper-found)."""
    import yaml
    from omegaconf._utils import get_yaml_loader

    path = conf / "local" / "default.yaml"
    try:
        # OmegaConf's loader, as Hydra reads it: it refuses a key given twice, as yaml's own
        # does not (helper-found: a 73-line traceback)
        loaded = yaml.load(path.read_text(), Loader=get_yaml_loader())  # noqa: S506 - safe
    except (OSError, UnicodeDecodeError):
        return None  # absent (it is optional), or Hydra's to say
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return (
            f"conf/local/default.yaml: not valid YAML ({problem}{where}); fix it or remove it "
            "(it is optional; see conf/local/example.yaml.txt)"
        )
    if loaded is not None and not isinstance(loaded, dict):
        return (
            f"conf/local/default.yaml: holds a {type(loaded).__name__}, not keys; allowed: "
            "`key: value` lines under its first line `# @package _global_` (see "
            "conf/local/example.yaml.txt)"
        )
    return None


def unknown_key(arguments: Sequence[str], groups: Iterable[str]) -> str | None:
    """The line naming an override of a key the run's schema has not, with the keys allowed
    there, or None. Hydra's own five lines for `trainer.max_epoch=3` ("Could not override ...
    To append to your config use +trainer.max_epoch=3 ... object_type=dict") advise a `+`
    that the schema then refuses all the same. `groups`: the config groups (conf/'s folders),
    which may be chosen at the top level (`experiment=...`). The schemas of conf/'s two
    primary configs are known here (a run's, and `--config-name train_policy`'s: a run's and
    `simic`); under another primary config or config directory, Hydra says it."""
    from hydra.core.override_parser.types import OverrideType

    from esper.config import RunConfig

    schema: type[Any] = RunConfig
    flags, overrides, _ = _split(arguments)
    for position, flag in enumerate(flags):
        action = _action_of(flag) if flag.startswith("-") else None
        if action is not None and action.dest in ("config_name", "config_dir", "config_path"):
            following = flags[position + 1] if position + 1 < len(flags) else ""
            given = (flag.partition("=")[2] or following).removesuffix(".yaml")
            if action.dest != "config_name" or given not in ("config", "train_policy"):
                return None
            schema = _train_policy_schema() if given == "train_policy" else RunConfig
    # train_policy.yaml composes these groups alone (its defaults list)
    known_groups = set(groups) if schema is RunConfig else {"paths", "logger", "local"}
    for argument, override in _parsed(overrides):
        key = override.key_or_group
        if override.type != OverrideType.CHANGE or override.package is not None:
            continue
        if key.startswith("hydra") and key.split(".")[0] in ("hydra", "hydra/"):
            if key.startswith("hydra.searchpath"):
                return None  # groups of the user's own: Hydra knows them, not this check
            continue
        if "/" in key:
            continue
        said = _unknown_in_schema(schema, key.split("."), known_groups)
        if (
            said is not None
            and schema is not RunConfig
            and "." in key
            and key.split(".")[0] in (RunConfig.model_fields)
        ):
            said += "; an episode's run settings go in simic.overrides=[...]"
        if said is not None:
            return f"{argument}: {said}"
    return None


def unknown_option_key(arguments: Sequence[str], conf: Path) -> str | None:
    """The line naming an override of a key that no option of its group has (`dataset`,
    `model`, `policy`, `storage`, `logger`: groups whose keys are their option's), with the
    keys of the option the run chooses, or None. Hydra refused it in six lines that advise a
    `+` (helper-found: `dataset.batch_sise=3`, `policy.patince=2`). Only what Hydra refuses is
    said: a key of any option of the group, or one a preset or conf/local sets there, or one
    a `+` adds, is left to Hydra; so is everything under another config directory."""
    import yaml
    from hydra.core.override_parser.types import OverrideType

    flags, overrides, _ = _split(arguments)
    for position, flag in enumerate(flags):
        dest = getattr(_action_of(flag), "dest", None)
        following = flags[position + 1] if position + 1 < len(flags) else ""
        given = (flag.partition("=")[2] or following).removesuffix(".yaml")
        if dest in CONFIG_FLAGS and (dest != "config_name" or given != "config"):
            return None  # another primary config or directory: unknown_key's reasoning
    parsed = _parsed(overrides)
    if any(o.key_or_group.startswith("hydra.searchpath") for _, o in parsed):
        return None
    if not any(o.key_or_group.partition(".")[0] in OPTION_GROUPS for _, o in parsed):
        return None  # nothing to look up: no conf/ file read on a run's start

    def read(path: Path) -> dict[str, Any]:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def option_keys(group: str, name: object, within: frozenset[str] = frozenset()) -> list[str]:
        """An option's keys in its file's order, then those of the options of its group its
        own defaults list names (helper-found: gnn_growth takes every key of gnn through
        `defaults: [gnn]`)."""
        text = read(conf / group / f"{name}.yaml")
        keys = [k for k in text if k != "defaults"]
        for entry in text.get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_" and entry not in within:
                inherited = option_keys(group, entry, within | {str(name)})
                keys += [k for k in inherited if k not in keys]
        return keys

    chosen = {
        o.key_or_group: o.value()
        for _, o in parsed
        if "." not in o.key_or_group and isinstance(o.value(), str)  # not a sweep
    }
    presets = [conf / "local" / "default.yaml"] + [
        conf / group / f"{chosen[group]}.yaml"
        for group in ("experiment", "hparams_search", "debug")
        if group in chosen
    ]
    preset_texts = [read(path) for path in presets]
    # what any preset (and the presets those include) may set under a group
    every_preset = [
        read(f)
        for g in ("experiment", "hparams_search", "debug")
        for f in (conf / g).glob("*.yaml")
    ]
    defaults = yaml.safe_load((conf / "config.yaml").read_text())["defaults"]
    choice = {k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()}
    for text in preset_texts:  # `override /dataset: digits` in a preset's defaults
        for entry in text.get("defaults") or []:
            for key, value in entry.items() if isinstance(entry, dict) else ():
                choice[str(key).removeprefix("override ").lstrip("/")] = value
    choice |= chosen
    added = {o.key_or_group for _, o in parsed if o.type != OverrideType.CHANGE}
    for argument, override in parsed:
        group, _, rest = override.key_or_group.partition(".")
        if not rest or group not in OPTION_GROUPS or override.type != OverrideType.CHANGE:
            continue
        if override.package is not None or f"{group}.{rest}" in added:
            continue
        key = rest.split(".")[0]
        if group in chosen:  # the option the command line chose: its keys
            known = set(option_keys(group, chosen[group]))
        else:  # chosen by a default or a preset: any option's keys, to be sure
            known = {k for f in (conf / group).glob("*.yaml") for k in option_keys(group, f.stem)}
        for text in [*preset_texts, *every_preset]:
            known |= set(text.get(group) or {})
        if key in known or not known:
            continue
        option = option_keys(group, choice.get(group))
        keys = ", ".join(k for k in option if not k.startswith("_")) or "none"
        return (
            f"{argument}: {key!r} is not a key of {group} ({group}={choice.get(group)}); "
            f"allowed: {keys}"
        )
    return None


OPTION_GROUPS = ("dataset", "model", "policy", "storage", "logger")
"""The groups whose keys are their chosen option's (the schema leaves them open)."""
CONFIG_FLAGS = ("config_name", "config_dir", "config_path")


def _train_policy_schema() -> type[Any]:
    """conf/train_policy.yaml's schema: what it composes (`name`, `run_dir`, `paths`, `logger`)
    and `simic` (imported here: Simic's settings import torch_geometric, which a run does not
    need). A run's other groups are not composed there: an episode's take
    `simic.overrides` (helper-found: `trainer.max_epochs=3` passed this check, then had
    Hydra's five lines advising a `+`)."""
    from pydantic import ConfigDict, create_model

    from esper.config import LoggerConfig, PathsConfig
    from esper.simic.settings import SimicConfig

    model: type[Any] = create_model(
        "TrainPolicy",
        __config__=ConfigDict(extra="forbid"),
        name=(str, ...),
        run_dir=(str | None, None),
        paths=(PathsConfig, ...),
        logger=(LoggerConfig, ...),
        simic=(SimicConfig, ...),
    )
    return model


def _unknown_in_schema(model: type[Any], path: list[str], groups: set[str]) -> str | None:
    """Why `path` is not a key of `model` (a pydantic model), or None where it is, or where
    the schema leaves the keys open there (a group's own settings: a dataset's, a policy's).
    A list's index or a dict's key (`simic.tasks.0.weight`) is stepped over, into its item
    (helper-found: the index was taken for a key of the list's items, and refused)."""
    depth = 0
    while depth < len(path):
        name = path[depth]
        if model.model_config.get("extra") != "forbid":
            return None
        fields = model.model_fields
        if name not in fields:
            if depth == 0 and len(path) == 1 and name in groups:
                return None
            if depth > 0:
                where = ".".join(path[:depth])
                return f"{name!r} is not a key of {where}; allowed: {', '.join(fields)}"
            presets = sorted(g for g in groups if g not in fields and g != "hydra")
            return (
                f"{name!r} is not a configuration key; allowed at the top level: "
                f"{', '.join(fields)}; and the groups {', '.join(presets)}"
            )
        nested, steps = _model_within(fields[name].annotation)
        if nested is None:
            return None
        model, depth = nested, depth + 1 + steps
    return None


def _model_within(annotation: Any) -> tuple[type[Any] | None, int]:
    """The pydantic model a field of type `annotation` holds (`X`, `X | None`, `list[X]`,
    `dict[str, X]`), and how many path parts (an index, a key) stand between the field and
    it; (None, 0) for anything else."""
    import types
    import typing

    from pydantic import BaseModel

    def is_model(kind: Any) -> bool:
        return isinstance(kind, type) and issubclass(kind, BaseModel)

    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [_model_within(a) for a in arguments if a is not type(None)]
        found = [found for found in inner if found[0] is not None]
        return found[0] if len(found) == 1 and len(inner) == 1 else (None, 0)
    if origin in (list, tuple) and arguments and is_model(arguments[0]):
        return arguments[0], 1
    if origin is dict and len(arguments) == 2 and is_model(arguments[1]):
        return arguments[1], 1
    return (annotation, 0) if is_model(annotation) else (None, 0)


def nested_sweep(arguments: Sequence[str]) -> str | None:
    """The line saying which argument holds a sweep inside a dict or list, or None.

    An argument Hydra's grammar cannot parse is left for Hydra to report, as are flags."""
    for argument, override in _parsed(_split(arguments)[1]):
        if override.is_sweep_override():
            continue
        found = list(_sweeps_in(override.value(), override.key_or_group))
        if found:
            where, sweep = found[0]
            call = _call_text(argument, _name(sweep))
            own = where if "[" not in where else "KEY"
            return (
                f"{argument}: a sweep, {call}, inside a dict or list is not one Hydra can apply; "
                f"give it as an argument of its own: {own}={call}"
            )
    return None


def _sweeps_in(value: Any, key: str) -> Iterable[tuple[str, Sweep]]:
    """(the key a sweep stands for, the sweep) for each sweep within `value`. Under
    `hydra.sweeper.params` a dict's keys are configuration keys (`policy.patience`)."""
    if isinstance(value, Sweep):
        yield key, value
    elif isinstance(value, dict):
        for inner, item in value.items():
            yield from _sweeps_in(
                item, inner if key == "hydra.sweeper.params" else f"{key}.{inner}"
            )
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sweeps_in(item, f"{key}[{index}]")


def _call_text(argument: str, name: str) -> str:
    """`name(...)` as the argument spells it (its first call of that name)."""
    start = argument.find(f"{name}(")
    if start < 0:
        return f"{name}(...)"
    depth = 0
    for end in range(start + len(name), len(argument)):
        depth += {"(": 1, ")": -1}.get(argument[end], 0)
        if depth == 0:
            return argument[start : end + 1]
    return f"{name}(...)"


def _name(sweep: Sweep) -> str:
    return type(sweep).__name__.removesuffix("Sweep").lower()
