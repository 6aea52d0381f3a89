"""CIFAR-10 read from a local directory in torchvision's format (`cifar-10-batches-py/` with
pickled `data_batch_1..5` and `test_batch`). Nothing is downloaded: point `dataset.root` at it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from esper.data.datasets import DataSplits, TensorLoader

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def cifar10(
    root: str | None,
    val_fraction: float = 0.1,
    train_limit: int | None = None,
    test_limit: int | None = None,
    batch_size: int = 128,
    split_seed: int = 0,
    loader_seed: int = 0,
) -> DataSplits:
    """Train/val from the five training batches (a fixed split), test from `test_batch`."""
    folder = Path(root or "").expanduser() / FOLDER
    missing = [f for f in [*TRAIN_FILES, TEST_FILE] if not (folder / f).is_file()]
    if root is None or missing:
        raise FileNotFoundError(
            f"dataset.root={root!r}: CIFAR-10 not found (missing {', '.join(missing) or 'root'} "
            f"under {folder}). Esper downloads nothing: put torchvision's "
            f"'{FOLDER}' folder there, or set dataset.root (or ESPER_CIFAR_ROOT)."
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction={val_fraction} must lie strictly between 0 and 1")
    parts = [_read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / TEST_FILE)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(split_seed))
    if train_limit:
        order = order[:train_limit]
    n_val = max(1, int(round(len(order) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if test_limit:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]

    mean = train_x.reshape(-1, 3, 32 * 32).mean(axis=(0, 2)) / 255.0
    std = train_x.reshape(-1, 3, 32 * 32).std(axis=(0, 2)) / 255.0 + 1e-8

    def tensor(images: np.ndarray) -> torch.Tensor:
        scaled = torch.tensor(images, dtype=torch.float32) / 255.0
        return (scaled - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(
            std, dtype=torch.float32
        )[:, None, None]

    x, y = tensor(train_x), torch.tensor(train_y)
    return DataSplits(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        train=TensorLoader(x[train_idx], y[train_idx], batch_size, True, seed=loader_seed),
        val=TensorLoader(x[val_idx], y[val_idx], max(batch_size, 1024), False),
        test=TensorLoader(tensor(test_x), torch.tensor(test_y), max(batch_size, 1024), False),
    )
