"""Small datasets live in memory; a hand-rolled loader beats DataLoader's per-batch overhead there."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def integer(key: str, value: object, minimum: int, why: str = "") -> int:
    """An int of at least `minimum`; a string from the command line ('abc') is named, not
    compared (which would fail with "'<' not supported between 'str' and 'int'")."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"dataset.{key}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"dataset.{key}={value!r} must be at least {minimum}{why}")
    return value


def number(key: str, value: object, low: float, high: float | None = None) -> float:
    """A finite real number in [low, high] (high: no bound when None); never NaN, infinity
    (helper-found: `noise=inf` was "the train split's x holds 2400 NaN or infinite values")
    or a bool."""
    real = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if real and value >= low and (high is None or value <= high):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}, finite"
    raise ValueError(f"dataset.{key}={value!r} must be a number {bound}")


class TensorLoader:
    """Batches of (x, y) from in-memory tensors; reshuffled each pass from its own generator."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            x, y = self.x[order], self.y[order]
        else:
            x, y = self.x, self.y
        for start in range(0, n, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]


@dataclass
class DataSplits:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train: TensorLoader
    val: TensorLoader
    test: TensorLoader

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k).x) for k in ("train", "val", "test")}

    def digest(self) -> dict[str, str]:
        """Each split's sha256 over its features and labels (dtype, shape and bytes). A
        checkpoint keeps it, so that a resume or `load_run` on data changed since the run (a
        file on disk, a user's factory, a library's bundled dataset) is named, not silently
        given other numbers (helper-found)."""
        digests = {}
        for split in ("train", "val", "test"):
            loader: TensorLoader = getattr(self, split)
            sha = hashlib.sha256()
            for tensor in (loader.x, loader.y):
                sha.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
                sha.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data
                )
            digests[split] = sha.hexdigest()
        return digests


def split_tensors(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    val_fraction: float,
    test_fraction: float,
    batch_size: int,
    split_seed: int,
    loader_seed: int,
    groups: torch.Tensor | None = None,
    unit: str = "sample",
) -> DataSplits:
    """Stratified-free random split with a fixed seed: the same split whatever the run's seed.
    `groups` (a label a row) keeps rows that share data together: the fractions are of the
    groups, each whole in one split (windows of one block of text, which overlap, must not be
    trained on and tested on); `unit` names a group in messages. Without it each row is its
    own group, which is the same split as before groups existed."""
    for key, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, float | int) or isinstance(frac, bool) or not 0.0 < frac < 1.0:
            raise ValueError(f"dataset.{key}={frac!r} must lie strictly between 0 and 1")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("dataset.val_fraction + dataset.test_fraction must be below 1")
    integer("batch_size", batch_size, 1)
    integer("split_seed", split_seed, 0)
    integer("loader_seed", loader_seed, 0)
    if len(x) != len(y):  # helper-found: an IndexError from the split's indexing
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if groups is not None and len(groups) != len(x):
        raise ValueError(f"x has {len(x)} rows but groups has {len(groups)}")
    member = (
        torch.arange(len(x)) if groups is None else torch.unique(groups, return_inverse=True)[1]
    )
    n = int(member.max()) + 1 if len(member) else 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    for key, frac, count in (
        ("val_fraction", val_fraction, n_val),
        ("test_fraction", test_fraction, n_test),
    ):
        if count == 0:  # an empty split divided by zero once trained (val) or at the end (test)
            raise ValueError(
                f"dataset.{key}={frac!r} leaves no {unit} of the {n}; allowed: at least "
                f"1/{n} = {1 / n:.3g} (one {unit})"
            )
    if n_test + n_val >= n:
        raise ValueError(
            f"dataset.val_fraction + dataset.test_fraction leave no training {unit} of the {n}"
        )
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    rows = torch.argsort(rank[member], stable=True)  # by their group's place in `order`
    place = rank[member][rows]
    test_idx, val_idx, train_idx = (
        rows[place < n_test],
        rows[(place >= n_test) & (place < n_test + n_val)],
        rows[place >= n_test + n_val],
    )

    def loader(idx: torch.Tensor, shuffle: bool) -> TensorLoader:
        size = batch_size if shuffle else max(batch_size, 1024)
        return TensorLoader(x[idx], y[idx], size, shuffle, seed=loader_seed)

    return DataSplits(
        name=name,
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
        train=loader(train_idx, True),
        val=loader(val_idx, False),
        test=loader(test_idx, False),
    )


def spirals(
    n: int = 2000,
    arms: int = 2,
    turns: float = 2.5,
    noise: float = 0.05,
    data_seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    batch_size: int = 64,
    split_seed: int = 0,
    loader_seed: int = 0,
) -> DataSplits:
    """Interleaved spiral arms in 2-D; hard for a narrow MLP, which is the point."""
    integer("arms", arms, 2)
    integer("n", n, 10 * arms, " (10 points an arm)")
    number("noise", noise, 0.0)
    number("turns", turns, 0.0)
    integer("data_seed", data_seed, 0)
    rng = np.random.default_rng(data_seed)
    labels = np.arange(n) % arms
    t = np.sqrt(rng.uniform(0.02, 1.0, size=n))
    theta = t * turns * 2 * np.pi + labels * 2 * np.pi / arms
    points = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    points += rng.normal(scale=noise, size=points.shape)
    x = torch.tensor(points / points.std(axis=0), dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    return split_tensors(
        "spirals", x, y, arms, val_fraction, test_fraction, batch_size, split_seed, loader_seed
    )


def digits(
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    batch_size: int = 64,
    split_seed: int = 0,
    loader_seed: int = 0,
) -> DataSplits:
    """scikit-learn's bundled 8x8 digits as 1x8x8 images scaled to [0, 1]; nothing is downloaded."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    return split_tensors(
        "digits", x, y, 10, val_fraction, test_fraction, batch_size, split_seed, loader_seed
    )
