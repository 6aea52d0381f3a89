"""Seed slots (Kasmina): lifecycle, gradient isolation, blending, and wrap()."""

from esper.seeds.lifecycle import ALLOWED, IN_FLIGHT, InvalidTransition, check_transition
from esper.seeds.slot import SeedSlot
from esper.seeds.wrap import MorphogeneticModel, SiteError, slot_key, wrap

__all__ = [
    "ALLOWED",
    "IN_FLIGHT",
    "InvalidTransition",
    "MorphogeneticModel",
    "SeedSlot",
    "SiteError",
    "check_transition",
    "slot_key",
    "wrap",
]
