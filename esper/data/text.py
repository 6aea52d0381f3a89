"""Char-level language modelling on a corpus that ships with Python itself: the help topics of
`pydoc_data` (about 465k characters of the language reference). Nothing is downloaded."""

from __future__ import annotations

import string

import torch

from esper.data.datasets import DataSplits, integer, split_tensors

ALPHABET = string.printable  # 100 characters; anything else becomes "?"
BLOCK_WINDOWS = 8
"""A block of text holds this many windows' characters: each block goes whole to one split."""


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
    """Windows of `seq_len` characters; the target is the same window shifted by one.

    The text is cut into blocks of `BLOCK_WINDOWS * (seq_len + 1)` characters (or `stride`,
    if longer), windows are taken within a block, and whole blocks go to train, val or test.
    Windows of one block overlap when `stride` is below `seq_len + 1`; split one by one, a
    test window shared 63 of its 64 characters with a training window at `stride=1`
    (helper-found: 82% of the test set)."""
    integer("seq_len", seq_len, 2)
    stride = seq_len if stride is None else integer("stride", stride, 1)
    integer("max_chars", max_chars, 1)
    ids = encode(corpus(max_chars))
    span = seq_len + 1
    block = max(BLOCK_WINDOWS * span, stride)
    n_blocks = len(ids) // block
    if n_blocks < 10:
        raise ValueError(
            f"dataset.max_chars={max_chars} leaves {n_blocks} blocks of {block} characters "
            f"(seq_len {seq_len}); allowed: at least 10 blocks, {10 * block} characters"
        )
    windows = ids[: n_blocks * block].view(n_blocks, block).unfold(1, span, stride)
    groups = torch.arange(n_blocks).repeat_interleave(windows.shape[1])
    windows = windows.reshape(-1, span)
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
        groups=groups,
        unit="block of text",
    )
