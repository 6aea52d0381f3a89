"""Checks of constructor arguments that come from the command line.

Hydra passes `model.hidden=abc` on as the string 'abc'; a bare `h < 1` then fails with
"'<' not supported between 'str' and 'int'", which names neither the key nor what is allowed.
These say both, and a constructor raising their ValueError fails the run before training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(key: str, value: Any, minimum: int) -> int:
    """An int (not a bool, not a float) of at least `minimum`."""
    if not _is_int(value):
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{key}={value!r} must be at least {minimum}")
    return int(value)


def optional_integer(key: str, value: Any, minimum: int, none_means: str) -> int | None:
    """None (which means `none_means`) or an int of at least `minimum`."""
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        shown = "an integer >=" if not _is_int(value) else "at least"
        raise ValueError(f"{key}={value!r} must be {shown} {minimum} (or null: {none_means})")
    return int(value)


def number(key: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A real number (int or float, not NaN, not a bool), within [low, high] when given."""
    real = _is_int(value) or (isinstance(value, float) and not math.isnan(value))
    if real and (low is None or value >= low) and (high is None or value <= high):
        return float(value)
    if low is not None and high is not None:
        raise ValueError(f"{key}={value!r} must be a number in [{low:g}, {high:g}]")
    if low is not None:
        raise ValueError(f"{key}={value!r} must be a number >= {low:g}")
    raise ValueError(f"{key}={value!r} must be a number")


def sizes(key: str, value: Any) -> list[int]:
    """A non-empty list of layer sizes, each an int >= 1."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(_is_int(v) and v >= 1 for v in value)
    ):
        shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise ValueError(f"{key}={shown!r} must be a non-empty list of sizes >= 1")
    return [int(v) for v in value]


INPUTS = {
    "tokens": "token ids (an integer tensor [T])",
    "values": "real-valued input (a float tensor)",
}
"""What a built-in host's `takes` attribute may say, in the words of the error."""


def input_mismatch(host: Any, example: Any, dataset: str) -> str | None:
    """Why `host` cannot take `example` (a batch of the dataset's inputs), or None.

    Token ids and real values can have the same shape ([T] and [F]), so the shape checks of the
    constructors cannot tell them apart; a host that declares `takes` is checked by dtype here,
    before a probe forward would fail with a dtype error from deep inside torch.
    """
    takes = getattr(host, "takes", None)
    if takes not in INPUTS:
        return None
    tokens = not example.is_floating_point()
    if tokens == (takes == "tokens"):
        return None
    name = getattr(host, "config_name", type(host).__name__)
    dtype = str(example.dtype).removeprefix("torch.")
    gives = f"{'token ids ' if tokens else ''}{dtype} {list(example.shape[1:])}"
    return f"model={name} needs {INPUTS[takes]}; dataset={dataset} gives {gives}"
