"""Training (Tolaria): the loop, the control step, and the experiment that wraps a run."""

from esper.training.trainer import BlueprintOptions, FitResult, Gates, SeedOptions, Trainer

__all__ = ["BlueprintOptions", "FitResult", "Gates", "SeedOptions", "Trainer"]
