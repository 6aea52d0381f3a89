"""Char-level language modelling on a corpus that ships with Python itself: the help topics of
`pydoc_data` (about 465k characters of the language reference). Nothing is downloaded."""

from __future__ import annotations

import string

import torch

from esper.data.datasets import DataSplits, integer, split_tensors

ALPHABET = string.printable  # 100 characters; anything else becomes "?"


def corpus(max_chars: int) -> str:
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    return text[:max_chars]


def encode(text: str) -> torch.Tensor:
    index = {c: i for i, c in enumerate(ALPHABET)}
    unknown = index["?"]
    return torch.tensor([index.get(c, unknown) for c in text], dtype=torch.long)


def decode(ids: torch.Tensor) -> str:
    return "".join(ALPHABET[i] for i in ids.tolist())


def pydoc_text(
    seq_len: int = 64,
    max_chars: int = 200_000,
    stride: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    batch_size: int = 64,
    split_seed: int = 0,
    loader_seed: int = 0,
) -> DataSplits:
    """Windows of `seq_len` characters; the target is the same window shifted by one."""
    integer("seq_len", seq_len, 2)
    stride = seq_len if stride is None else integer("stride", stride, 1)
    integer("max_chars", max_chars, 1)
    ids = encode(corpus(max_chars))
    if len(ids) < 10 * (seq_len + 1):
        raise ValueError(f"dataset.max_chars={max_chars} leaves too few windows of {seq_len}")
    windows = ids.unfold(0, seq_len + 1, stride)
    x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()
    return split_tensors(
        "pydoc_text",
        x,
        y,
        len(ALPHABET),
        val_fraction,
        test_fraction,
        batch_size,
        split_seed,
        loader_seed,
    )
