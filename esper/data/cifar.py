"""CIFAR-10 read from a local directory in torchvision's format (`cifar-10-batches-py/` with
pickled `data_batch_1..5` and `test_batch`). Nothing is downloaded: point `dataset.root` at it.

The batches are pickles, and a pickle can name any callable to run while it loads. So they are
read with an unpickler that knows only what that format holds (dicts, lists, strings, bytes,
numbers, and numpy arrays of plain numeric dtypes) and builds the arrays itself with
`np.frombuffer`: numpy's own reconstructors never see the file's state. Anything else, and any
corrupt, empty or truncated file, is one `CifarFormatError` naming the file.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.config import first_line, reason
from esper.data.datasets import DataSplits, TensorLoader, integer, number

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
PIXELS = 3 * 32 * 32
CLASSES = 10
NUMERIC = frozenset(["b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"])


class CifarFormatError(ValueError):
    """A batch file that is not what torchvision's CIFAR-10 python batches hold."""


class _Refused(pickle.UnpicklingError):
    pass


class _Dtype:
    """Stands for numpy.dtype(code): a plain numeric dtype, byte order from its state."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if isinstance(code, bytes):
            code = code.decode("latin1")
        if not isinstance(code, str) or code not in NUMERIC:
            raise _Refused(f"dtype {code!r} is not a plain number type")
        self.dtype = np.dtype(code)

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) < 5 or state[3:5] != (None, None):
            raise _Refused("a structured dtype")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"byte order {order!r}")
        if order == "<":
            self.dtype = self.dtype.newbyteorder("<")
        elif order == ">":
            self.dtype = self.dtype.newbyteorder(">")


def _dtype_of(value: object) -> np.dtype:
    if not isinstance(value, _Dtype):
        raise _Refused("an array without a plain dtype")
    return value.dtype


def _raw(data: object) -> bytes:
    if isinstance(data, str):  # Python 2 str, read as latin-1
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise _Refused("array data that is not bytes")


def _build(raw: object, dtype: object, shape: object, order: str = "C") -> np.ndarray:
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise _Refused(f"array shape {shape!r}")
    data = _raw(raw)
    kind = _dtype_of(dtype)
    if len(data) != math.prod(shape) * kind.itemsize:
        raise _Refused(f"{len(data)} bytes for an array of shape {shape}")
    return np.frombuffer(data, dtype=kind).reshape(shape, order="F" if order == "F" else "C")


class _Array:
    """Stands for numpy's _reconstruct(ndarray, ...); its state becomes an array we build."""

    def __init__(self, cls: object, shape: object = (0,), code: object = b"b") -> None:
        if cls is not _NDARRAY:
            raise _Refused("_reconstruct of something other than an ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("array state")
        _, shape, dtype, fortran, raw = state
        self.array = _build(raw, dtype, shape, "F" if fortran else "C")


def _scalar(dtype: object, raw: object) -> Any:
    return _build(raw, dtype, (1,))[0]


def _frombuffer(buffer: object, dtype: object, shape: object, order: object = "C") -> np.ndarray:
    return _build(buffer, dtype, shape, "F" if order == "F" else "C")


def _encode(text: object, encoding: str = "utf-8") -> bytes:
    """How Python 3 pickles bytes at protocol 2: latin-1 only."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_NDARRAY = object()
_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _encode,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _Array for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it names {module}.{name}, which a CIFAR batch never holds") from None


def _arrays(value: Any) -> Any:
    """Replace the stand-ins by the arrays they built."""
    if isinstance(value, _Array):
        if value.array is None:
            raise _Refused("an array without data")
        return value.array
    if isinstance(value, dict):
        return {_arrays(k): _arrays(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays(v) for v in value)
    if isinstance(value, _Dtype) or value is _NDARRAY:
        raise _Refused("a bare numpy object")
    return value


def load_batch(data: bytes) -> dict[str, Any]:
    """The batch's dict, keys as str, from the bytes of a trusted or untrusted file."""
    entry = _arrays(_BatchUnpickler(io.BytesIO(data), encoding="latin1").load())
    if not isinstance(entry, dict):
        raise _Refused(f"it holds a {type(entry).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _checked(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise _Refused("no 'data' array and 'labels'")
    if data.dtype.kind not in "iub" or data.ndim != 2 or data.shape[1] != PIXELS:
        raise _Refused(f"'data' is {data.dtype} {list(data.shape)}, not uint8 [N, {PIXELS}]")
    if len(data) == 0 or (data.size and (data.min() < 0 or data.max() > 255)):
        raise _Refused("'data' holds no images, or values outside 0..255")
    try:
        targets = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise _Refused("'labels' are not integers") from None
    if targets.shape != (len(data),):
        raise _Refused(f"{targets.size} labels for {len(data)} images")
    if targets.min() < 0 or targets.max() >= CLASSES:
        raise _Refused(f"labels outside 0..{CLASSES - 1}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), targets


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CifarFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return _checked(load_batch(raw))
    except Exception as exc:  # noqa: BLE001 - whatever an untrusted file does, one error
        why = reason(exc) if isinstance(exc, _Refused) else first_line(exc)
        if isinstance(exc, EOFError) or not raw:
            why = "empty or truncated"
        raise CifarFormatError(f"{path} is not a valid CIFAR-10 batch ({why})") from None


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
    # checked as spirals' and digits' settings are (helper-found: `val_fraction=abc` was
    # "'<' not supported between ...", `test_limit=-1` quietly tested on 99 of 100 images)
    number("val_fraction", val_fraction, 0.0, 1.0)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction={val_fraction} must lie strictly between 0 and 1")
    for key, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None:
            integer(key, limit, 2 if key == "train_limit" else 1, " (null: every image)")
    integer("batch_size", batch_size, 1)
    integer("split_seed", split_seed, 0)
    integer("loader_seed", loader_seed, 0)
    parts = [_read_batch(folder / f) for f in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / TEST_FILE)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(split_seed))
    if train_limit is not None:
        order = order[:train_limit]
    n_val = max(1, int(round(len(order) * val_fraction)))
    if n_val >= len(order):
        raise ValueError(
            f"dataset.train_limit={train_limit} with dataset.val_fraction={val_fraction} leaves "
            f"no training image of the {len(order)}"
        )
    val_idx, train_idx = order[:n_val], order[n_val:]
    if test_limit is not None:
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
