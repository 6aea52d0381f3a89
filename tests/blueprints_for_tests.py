"""A user's own blueprint, registered from config in tests (not by a decorator)."""

from __future__ import annotations

import torch
from torch import nn


class ScaledAdapter(nn.Module):
    def __init__(self, features: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(features, width)
        self.up = nn.Linear(width, features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.tanh(self.down(x)))


def scaled_adapter(shape: tuple[int, ...], width: int) -> nn.Module:
    return ScaledAdapter(shape[-1], width)


def broken_adapter(shape: tuple[int, ...]) -> nn.Module:
    return nn.Linear(shape[-1], shape[-1])


class DataDependentAdapter(ScaledAdapter):
    """Branches on its input's values: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x > 0).sum().item() > 3:
            return super().forward(x)
        return 2 * super().forward(x)


def data_dependent_adapter(shape: tuple[int, ...]) -> nn.Module:
    return DataDependentAdapter(shape[-1], 8)


def narrow_adapter(shape: tuple[int, ...]) -> nn.Module:
    return ScaledAdapter(shape[-1], 8)


def wide_adapter(shape: tuple[int, ...]) -> nn.Module:
    return ScaledAdapter(shape[-1], 32)


class DropoutAdapter(ScaledAdapter):
    """Dropout between its layers: random in training, the identity in eval."""

    def __init__(self, features: int, width: int) -> None:
        super().__init__(features, width)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(torch.tanh(self.down(x))))


def dropout_adapter(shape: tuple[int, ...]) -> nn.Module:
    return DropoutAdapter(shape[-1], 8)


class NoisyAdapter(ScaledAdapter):
    """Noise drawn on every forward, in eval too: the same input gives another output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.tanh(self.down(x + torch.randn_like(x))))


def noisy_adapter(shape: tuple[int, ...]) -> nn.Module:
    return NoisyAdapter(shape[-1], 8)


class TrainingBranchAdapter(ScaledAdapter):
    """Scales its hidden layer in training only: the kernel, exported from training mode,
    would scale it in evaluation too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.down(x))
        if self.training:
            h = h * 2.0
        return self.up(h)


def training_branch_adapter(shape: tuple[int, ...]) -> nn.Module:
    return TrainingBranchAdapter(shape[-1], 8)


class FileSetAdapter(ScaledAdapter):
    """ScaledAdapter whose output is scaled by a number it was built with."""

    def __init__(self, features: int, width: int, scale: float) -> None:
        super().__init__(features, width)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * super().forward(x)


def file_set_adapter(shape: tuple[int, ...], settings: str = "") -> nn.Module:
    """Reads its width, scale and a weight offset from the JSON file `settings`: code the
    kernel key's digest cannot see (a file a builder reads)."""
    import json
    from pathlib import Path

    read = json.loads(Path(settings).read_text())
    adapter = FileSetAdapter(shape[-1], read["width"], read["scale"])
    with torch.no_grad():
        adapter.down.bias.add_(read["offset"])
    return adapter


class OldWeightNorm(nn.Module):
    """The old `nn.utils.weight_norm`: its `weight` is a computed tensor, not a leaf, so the
    module cannot be deep-copied."""

    def __init__(self, features: int) -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated in favour of parametrizations
            self.lin = nn.utils.weight_norm(nn.Linear(features, features))
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.lin(x)


def old_weight_norm(shape: tuple[int, ...]) -> nn.Module:
    return OldWeightNorm(shape[-1])
