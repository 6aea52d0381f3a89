"""Datasets as in-memory tensors split once, deterministically, into train/val/test loaders."""

from esper.data.cifar import cifar10
from esper.data.datasets import DataSplits, TensorLoader, digits, spirals, split_tensors
from esper.data.text import pydoc_text

__all__ = [
    "DataSplits",
    "TensorLoader",
    "cifar10",
    "digits",
    "pydoc_text",
    "split_tensors",
    "spirals",
]
