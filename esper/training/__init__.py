"""Training (Tolaria): the loop, the control step, and the experiment that wraps a run."""

from esper.training.trainer import FitResult, Trainer

__all__ = ["FitResult", "Trainer"]
