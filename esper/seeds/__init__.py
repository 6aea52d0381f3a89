"""Seed slots (Kasmina): lifecycle, gradient isolation, blending, and wrap()."""

from esper.seeds.graph_features import ModelGraph
from esper.seeds.lifecycle import (
    ALLOWED,
    IN_FLIGHT,
    InvalidTransition,
    Lifecycle,
    check_transition,
)
from esper.seeds.merge import merge_into_site, merge_obstacle
from esper.seeds.slot import SeedSlot
from esper.seeds.wrap import MorphogeneticModel, ProbeFailed, SiteError, slot_key, wrap

__all__ = [
    "ALLOWED",
    "IN_FLIGHT",
    "InvalidTransition",
    "Lifecycle",
    "MorphogeneticModel",
    "SeedSlot",
    "ProbeFailed",
    "SiteError",
    "check_transition",
    "merge_into_site",
    "merge_obstacle",
    "ModelGraph",
    "slot_key",
    "wrap",
]
