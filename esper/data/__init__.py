"""Datasets as in-memory tensors split once, deterministically, into train/val/test loaders."""

from esper.data.datasets import DataSplits, TensorLoader, digits, spirals, split_tensors

__all__ = ["DataSplits", "TensorLoader", "digits", "split_tensors", "spirals"]
