"""Esper: morphogenetic training. `esper.wrap(model, sites=[...], example_input=x)` is the entry."""

from esper.seeds import wrap

__all__ = ["wrap"]
