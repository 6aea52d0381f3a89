"""Host models. Each names its seed sites in conf/model/<name>.yaml (module names)."""

from esper.models.hosts import CNN, MLP

__all__ = ["CNN", "MLP"]
