"""Esper: morphogenetic training. `esper.wrap(model, sites=[...], example_input=x)` is the entry;
`esper.load_run(run_dir)` gives back the model a run grew."""

from typing import Any

from esper.seeds import wrap

__all__ = ["load_run", "wrap"]


def __getattr__(name: str) -> Any:
    # load_run composes a run (Hydra, the kernel library): imported when asked for, so that
    # `import esper` for wrap() stays light
    if name == "load_run":
        from esper.grown import load_run

        return load_run
    raise AttributeError(f"module 'esper' has no attribute {name!r}")
