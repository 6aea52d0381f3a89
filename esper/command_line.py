"""What run.py checks in its arguments before Hydra composes anything: the mistakes whose only
message is Hydra's, and that message names neither the cause nor the way out.

A sweep function (`range`, `choice`, `interval`, ...) inside a dict or list value, as in
`hydra.sweeper.params={policy.patience:range(1,3)}`, parses: Hydra's grammar reads the inner
call as a sweep object, and merging it into the configuration then fails with `Unexpected type
annotation: Set[str] ... object_type=RangeSweep`. A sweep is a whole argument of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Sweep

_LONG_FLAGS_WITH_A_VALUE = (
    "--config-name",
    "--config-path",
    "--config-dir",
    "--package",
    "--experimental-rerun",
)
_FLAGS_WITH_A_VALUE = {"-cn", "-cp", "-cd", "-p"}
"""Hydra's flags whose value is the next argument, not an override (argparse takes a long one
abbreviated too: `--config-na`)."""
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}
"""`--info`'s optional value."""


def _takes_a_value(flag: str, following: str) -> bool:
    if flag in _FLAGS_WITH_A_VALUE or flag in ("--info", "-i") and following in _INFO_CHOICES:
        return True
    return (
        len(flag) > 2
        and "=" not in flag
        and any(long.startswith(flag) for long in _LONG_FLAGS_WITH_A_VALUE)
    )


def nested_sweep(arguments: Sequence[str]) -> str | None:
    """The line saying which argument holds a sweep inside a dict or list, or None.

    An argument Hydra's grammar cannot parse is left for Hydra to report, as are flags."""
    parser = OverridesParser.create()
    skip_next = False
    for index, argument in enumerate(arguments):
        if skip_next or argument.startswith("-"):
            following = arguments[index + 1] if index + 1 < len(arguments) else ""
            skip_next = not skip_next and _takes_a_value(argument, following)
            continue
        try:
            (override,) = parser.parse_overrides([argument])
        except Exception:  # noqa: BLE001 - Hydra says what is wrong with its own grammar
            continue
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
