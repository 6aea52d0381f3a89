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

_FLAGS_WITH_A_VALUE = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"}
"""Hydra's flags whose value is the next argument (not an override)."""


def nested_sweep(arguments: Sequence[str]) -> str | None:
    """The line saying which argument holds a sweep inside a dict or list, or None.

    An argument Hydra's grammar cannot parse is left for Hydra to report, as are flags."""
    parser = OverridesParser.create()
    skip_next = False
    for argument in arguments:
        if skip_next or argument.startswith("-"):
            skip_next = argument in _FLAGS_WITH_A_VALUE
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
            call = f"{_name(sweep)}(...)"
            own = where if "[" not in where else "KEY"
            return (
                f"{argument}: a sweep, {call}, inside a dict or list is not one Hydra can apply; "
                f"sweep the key with an argument of its own ({own}={call}), or quote the call "
                "to keep it a string"
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


def _name(sweep: Sweep) -> str:
    return type(sweep).__name__.removesuffix("Sweep").lower()
