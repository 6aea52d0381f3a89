"""Blueprints (Karn): named recipes that build a shape-preserving, zero-at-birth seed module."""

from esper.blueprints import builders as _builders  # noqa: F401  (registers the built-ins)
from esper.blueprints.registry import (
    Blueprint,
    BlueprintContractError,
    BlueprintSource,
    UnknownBlueprintError,
    build,
    check_contract,
    compatible,
    ensure,
    get,
    kernel_spec,
    names,
    register,
    register_from_config,
    source,
)

__all__ = [
    "Blueprint",
    "BlueprintContractError",
    "BlueprintSource",
    "check_contract",
    "ensure",
    "register_from_config",
    "source",
    "UnknownBlueprintError",
    "build",
    "compatible",
    "get",
    "kernel_spec",
    "names",
    "register",
]
