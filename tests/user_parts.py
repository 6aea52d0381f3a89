"""A user's own dataset factory and host, each broken one way by `kind` (tests of what the
preflight says about the data and the host's output)."""

from __future__ import annotations

import torch
from torch import nn

from esper.data import DataSplits, TensorLoader, split_tensors


def dataset(kind: str = "ok", num_classes: int = 2) -> DataSplits:
    """400 rows of 2 features, labelled by the first's sign, split 60/20/20."""
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    if kind == "nan_features":
        x[::7, 0] = float("nan")
    elif kind == "float64":
        x = x.double()
    elif kind == "int32_labels":
        y = y.int()
    elif kind == "label_in_test_only":
        y[-1] = 2
    elif kind == "one_class":
        num_classes = 1
    elif kind == "fewer_labels":
        y = y[:300]
    elif kind == "column_labels":
        y = y[:, None]
    elif kind == "one_feature_column_labels":  # x [N, 1] and labels [N, 1]: not per position
        x, y = x[:, :1], y[:, None]
    data = split_tensors("mine", x, y, num_classes, 0.2, 0.2, 64, 0, 0)
    if kind == "label_in_test_only":  # the split put row 399 anywhere: make one test label 2
        data.test.y[0] = 2
        data.train.y.clamp_(max=1)
        data.val.y.clamp_(max=1)
    if kind == "empty_val":
        data.val = TensorLoader(x[:0], y[:0], 64, shuffle=False)
    if kind == "wrong_input_shape":
        data.input_shape = (3,)
    if kind == "ndarray_features":
        data.train.x = data.train.x.numpy()  # type: ignore[assignment]
    if kind == "features_in_a_graph":  # made by a differentiable transform, never detached
        data.train.x = data.train.x * torch.ones(1, requires_grad=True)
    if kind == "uint8_features":
        data.val.x = data.val.x.to(torch.uint8)
    return data


def dataset_from_file(path: str) -> DataSplits:
    """Rows read from a file saved with `torch.save({"x": ..., "y": ...})`: data that can
    change on disk between a run and its resume or `load_run`."""
    rows = torch.load(path, weights_only=True)
    return split_tensors("from_file", rows["x"], rows["y"], 2, 0.2, 0.2, 64, 0, 0)


class Host(nn.Module):
    """Linear(2, 8), ReLU, then a head; `kind` breaks its output or its parameters."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, kind: str = "ok") -> None:
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Linear(input_shape[0], 8), nn.ReLU())
        if kind == "integer_body":  # a quantised activation at the site
            self.body.append(Rounded())
        self.head = nn.Linear(8, num_classes + 3 if kind == "wide" else num_classes)
        if kind == "frozen":
            self.requires_grad_(False)
        if kind == "frozen_body":  # a pretrained backbone, kept as it is
            self.body.requires_grad_(False)
        if kind == "tiny_relu_start":  # near-zero, non-negative logits (ReLU'd) at first
            nn.init.normal_(self.head.weight, std=1e-6)
            nn.init.zeros_(self.head.bias)
        if kind == "majority_class_start":  # logits [1, 0] for every row at first
            nn.init.zeros_(self.head.weight)
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor([1.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        z = self.head(self.body(x).float())
        if self.kind == "unsqueezed":
            return z.unsqueeze(1)
        if self.kind == "tuple":
            return z, x
        if self.kind == "tiny_relu_start":
            return torch.relu(z)
        if self.kind == "softmax":
            return z.softmax(dim=-1)
        if self.kind == "softmax_over_batch":
            return z.softmax(dim=0)
        if self.kind == "scaled_softmax":
            return 10 * z.softmax(dim=-1)
        return z


class Rounded(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (4 * x).round().long()


def not_a_module(input_shape: tuple[int, ...], num_classes: int) -> object:
    """A host factory that returns a function (a user's slip)."""
    return lambda x: x
