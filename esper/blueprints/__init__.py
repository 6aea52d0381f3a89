"""Blueprints (Karn): named recipes that build a shape-preserving, zero-at-birth seed module."""

from esper.blueprints import builders as _builders  # noqa: F401  (registers the built-ins)
from esper.blueprints.registry import (
    Blueprint,
    UnknownBlueprintError,
    build,
    compatible,
    get,
    names,
    register,
)

__all__ = [
    "Blueprint",
    "UnknownBlueprintError",
    "build",
    "compatible",
    "get",
    "names",
    "register",
]
