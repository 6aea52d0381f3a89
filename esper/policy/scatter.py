"""The aggregation primitive of the GNN policy's message passing, on two backends.

`scatter(src, index, dim_size, reduce, backend)` reduces the rows of `src` ([E, F], one per
edge) into `dim_size` rows ([dim_size, F], one per node) by `index` ([E], long): `sum`, `mean`
or `max`. Rows that no edge reaches are zeros. Two backends give the same outputs and the same
gradients:

- `torch`: native `Tensor.index_add_` (sum, mean) and `Tensor.scatter_reduce_("amax",
  include_self=False)` (max, with a leaner backward than autograd's); always available.
- `torch_scatter`: the optional `torch-scatter` package (`make accel`, the `accel` extra).

Neither backend is faster everywhere: on a 2-core CPU torch-scatter's `max` forward is about 28x
slower than native `scatter_reduce` (its backward is cheap), while `sum` and `mean` are within
20%; on a GPU the figures differ again. So `ScatterBackends.choose` picks per reduction from a
short measurement (forward + backward by default, or forward only; the median of `calls` timed
calls after a warm-up) on the shapes it will run, caches the choice and the figures on disk, and
logs them; `policy.scatter_backend=torch|torch_scatter` fixes the backend instead.

Ties in `max`: the torch backend splits the gradient evenly between equal maxima, torch-scatter
gives it to one of them; on real-valued activations ties do not happen.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

log = logging.getLogger(__name__)

Reduce = Literal["sum", "mean", "max"]
Backend = Literal["torch", "torch_scatter"]
Setting = Literal["auto", "torch", "torch_scatter"]
Passes = Literal["forward+backward", "forward"]
REDUCTIONS: tuple[Reduce, ...] = get_args(Reduce)
BACKENDS: tuple[Backend, ...] = get_args(Backend)
SETTINGS: tuple[Setting, ...] = get_args(Setting)

CACHE_FILE = "scatter_backends.json"
CACHE_FORMAT: Literal[1] = 1
SETTING_KEY = "policy.scatter_backend"


# --- the primitive -------------------------------------------------------------------------


def scatter(src: Tensor, index: Tensor, dim_size: int, reduce: Reduce, backend: Backend) -> Tensor:
    """Reduce the rows of `src` [E, F] into [dim_size, F] by `index` [E] (long, values in
    `[0, dim_size)`); rows no index points at are zeros. Differentiable with respect to `src`."""
    if backend == "torch":
        return _torch_scatter_native(src, index, dim_size, reduce)
    if backend == "torch_scatter":
        import torch_scatter

        if reduce == "max":
            return torch_scatter.scatter_max(src, index, dim=0, dim_size=dim_size)[0]
        return torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce=reduce)
    raise ValueError(f"unknown scatter backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def _torch_scatter_native(src: Tensor, index: Tensor, dim_size: int, reduce: Reduce) -> Tensor:
    out = src.new_zeros((dim_size, *src.shape[1:]))
    if reduce == "sum":
        return out.index_add_(0, index, src)
    if reduce == "mean":
        count = torch.bincount(index, minlength=dim_size).clamp_(min=1).to(src.dtype)
        return out.index_add_(0, index, src) / count.view(-1, *([1] * (src.dim() - 1)))
    if reduce == "max":
        if src.requires_grad and torch.is_grad_enabled():
            out = _ScatterMax.apply(src, index, dim_size)
            assert isinstance(out, Tensor)
            return out
        return _scatter_amax(src, index, out)
    raise ValueError(f"unknown scatter reduction {reduce!r}; allowed: {', '.join(REDUCTIONS)}")


def _scatter_amax(src: Tensor, index: Tensor, out: Tensor) -> Tensor:
    expanded = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    return out.scatter_reduce_(0, expanded, src, "amax", include_self=False)


class _ScatterMax(torch.autograd.Function):
    """`scatter_reduce_("amax", include_self=False)` with a leaner backward than autograd's own
    (3x faster on CPU at 2,000 edges x 64 features): each segment's gradient is split evenly
    between the rows equal to its maximum. Autograd's (torch 2.13) also counts the excluded zero
    initial value as a tie when a segment's maximum is 0, losing that share; this one does not."""

    @staticmethod
    def forward(ctx: Any, src: Tensor, index: Tensor, dim_size: int) -> Tensor:
        out = _scatter_amax(src, index, src.new_zeros((dim_size, *src.shape[1:])))
        ctx.save_for_backward(src, index, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        src, index, out = ctx.saved_tensors
        is_max = (src == out.index_select(0, index)).to(src.dtype)
        ties = torch.zeros_like(out).index_add_(0, index, is_max).clamp_(min=1)
        return is_max.mul_((grad / ties).index_select(0, index)), None, None


def torch_scatter_status() -> tuple[str | None, str]:
    """(version, note): the importable torch-scatter's version, or None and why it is unusable.

    Reads the real import state each call (an import already done is a dictionary lookup)."""
    try:
        module = importlib.import_module("torch_scatter")
    except ImportError:
        return None, "torch_scatter not installed"
    except Exception as err:  # a build for another torch fails with OSError/RuntimeError
        return None, f"torch_scatter unusable ({type(err).__name__}: {err})"
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version("torch-scatter")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return str(version), f"torch_scatter {version}"


# --- the per-reduction choice --------------------------------------------------------------


class BackendChoice(BaseModel):
    """Which backend each reduction uses, and why; publishable as is (`model_dump()`)."""

    model_config = ConfigDict(frozen=True)

    choice: dict[Reduce, Backend]
    figures_us: dict[Reduce, dict[Backend, float]]
    """Median microseconds of the timed passes (see `key`) per reduction and backend; empty
    unless `auto` compared both backends (then they come from the measurement or its cache)."""
    source: Literal["measured", "cached", "fixed"]
    note: str
    key: str
    """The cache key: device (and CPU threads), torch and torch-scatter versions, shapes
    bucket, passes timed."""

    def scatter(self, src: Tensor, index: Tensor, dim_size: int, reduce: Reduce) -> Tensor:
        """`scatter` on the backend chosen for `reduce`."""
        return scatter(src, index, dim_size, reduce, self.choice[reduce])

    def summary(self) -> str:
        """One line: the choice, with the figures it was made from."""
        parts = []
        for reduce in REDUCTIONS:
            figures = self.figures_us.get(reduce)
            shown = (
                " (" + ", ".join(f"{b} {us:.1f} us" for b, us in figures.items()) + ")"
                if figures
                else ""
            )
            parts.append(f"{reduce}={self.choice[reduce]}{shown}")
        return f"scatter backends [{self.source}; {self.note}]: " + "; ".join(parts)


class _CacheEntry(BaseModel):
    choice: dict[Reduce, Backend]
    figures_us: dict[Reduce, dict[Backend, float]]
    measured_at: float


class _CacheFile(BaseModel):
    format: Literal[1]
    entries: dict[str, _CacheEntry]


def default_cache_dir() -> Path:
    """`$ESPER_CACHE_DIR`, else `$XDG_CACHE_HOME/esper`, else `~/.cache/esper`."""
    if explicit := os.environ.get("ESPER_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "esper"


def bucket(n: int) -> int:
    """The power of two at or above `n` (at least 1): the shapes' cache granularity."""
    return 1 << max(0, int(n) - 1).bit_length()


class ScatterBackends:
    """Chooses a backend per reduction for a device and a shape; `auto` measures once per
    (device, torch version, torch-scatter version, threads, shapes bucket) and caches on disk.

    `measurements` counts the `choose` calls that measured (the others were fixed or cached).
    """

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        calls: int = 20,
        warmup: int = 3,
        budget_s: float = 1.0,
    ) -> None:
        self.cache_path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
        self.calls = calls
        self.warmup = warmup
        self.budget_s = budget_s
        """For the whole measurement, a third per reduction: warm-up and timed calls stop early
        once it is spent (after 1 warm-up and 3 timed calls per backend at the least)."""
        self.measurements = 0

    def choose(
        self,
        setting: Setting,
        device: torch.device,
        num_edges: int,
        features: int,
        *,
        passes: Passes = "forward+backward",
    ) -> BackendChoice:
        """The backend for each reduction on `device` for about `num_edges` x `features`.

        `passes` is what `auto` times: a forward and a backward (training) or the forward
        alone (decisions under `torch.no_grad`). They can disagree: torch-scatter's `max` has a
        slow forward and a cheap backward."""
        device = torch.device(device)
        if setting not in SETTINGS:
            raise ValueError(f"{SETTING_KEY}={setting!r}: allowed values are {', '.join(SETTINGS)}")
        version, status = torch_scatter_status()
        edges, feats = bucket(num_edges), bucket(features)
        if passes not in get_args(Passes):
            raise ValueError(f"passes={passes!r}: allowed values are {', '.join(get_args(Passes))}")
        key = cache_key(device, version, edges, feats, passes)
        if version is not None and setting != "torch" and (failure := _probe(device)):
            version, status = None, f"torch_scatter {version} does not run on {device} ({failure})"
        if setting == "torch_scatter" and version is None:
            raise ValueError(
                f"{SETTING_KEY}=torch_scatter, but {status}: install the accel extra "
                f"(`make accel`, i.e. pip install -e '.[accel]'; built with CUDA for a GPU) "
                f"or choose one of {SETTING_KEY}=auto|torch"
            )
        if setting != "auto" or version is None:
            backend: Backend = "torch" if setting == "auto" else setting
            why = f"{SETTING_KEY}={setting}" + (f"; {status}" if version is None else "")
            result = BackendChoice(
                choice=dict.fromkeys(REDUCTIONS, backend),
                figures_us={},
                source="fixed",
                note=why,
                key=key,
            )
        elif (entry := self._read(key)) is not None:
            result = BackendChoice(
                choice=entry.choice,
                figures_us=entry.figures_us,
                source="cached",
                note=f"{status}; cached in {self.cache_path}",
                key=key,
            )
        else:
            started = time.perf_counter()
            figures = self._measure(device, edges, feats, passes)
            took = time.perf_counter() - started
            self.measurements += 1
            choice = {r: min(BACKENDS, key=figures[r].__getitem__) for r in REDUCTIONS}
            self._write(
                key, _CacheEntry(choice=choice, figures_us=figures, measured_at=time.time())
            )
            result = BackendChoice(
                choice=choice,
                figures_us=figures,
                source="measured",
                note=f"{status}; {edges} edges x {feats} features, {passes}, "
                f"measured in {took:.2f} s",
                key=key,
            )
        log.info("%s", result.summary())
        return result

    # --- measurement -----------------------------------------------------------------------

    def _measure(
        self, device: torch.device, edges: int, features: int, passes: Passes
    ) -> dict[Reduce, dict[Backend, float]]:
        """Median microseconds of `passes`, per reduction and backend, the two
        backends alternating call by call. Uses its own generator: the global RNG (and so a
        run's determinism) is untouched."""
        nodes = max(1, edges // 2)
        gen = torch.Generator().manual_seed(0)
        backward = passes == "forward+backward"
        with torch.inference_mode(False), torch.set_grad_enabled(backward):
            src = torch.randn(edges, features, generator=gen).to(device).requires_grad_(backward)
            index = torch.randint(0, nodes, (edges,), generator=gen).to(device)
            grad = torch.randn(nodes, features, generator=gen).to(device)
            cuda = device.type == "cuda"

            def sync() -> None:
                if cuda:
                    torch.cuda.synchronize(device)

            figures: dict[Reduce, dict[Backend, float]] = {}
            for reduce in REDUCTIONS:

                def step(backend: Backend, reduce: Reduce = reduce) -> float:
                    sync()
                    start = time.perf_counter()
                    out = scatter(src, index, nodes, reduce, backend)
                    if backward:
                        out.backward(grad)
                    sync()
                    src.grad = None
                    return time.perf_counter() - start

                deadline = time.perf_counter() + self.budget_s / len(REDUCTIONS)
                for i in range(max(1, self.warmup)):
                    if i >= 1 and time.perf_counter() > deadline:
                        break
                    for backend in BACKENDS:
                        step(backend)
                times: dict[Backend, list[float]] = {b: [] for b in BACKENDS}
                for i in range(max(3, self.calls)):
                    if i >= 3 and time.perf_counter() > deadline:
                        break
                    for backend in BACKENDS if i % 2 == 0 else BACKENDS[::-1]:
                        times[backend].append(step(backend))
                figures[reduce] = {
                    b: round(statistics.median(t) * 1e6, 3) for b, t in times.items()
                }
        return figures

    # --- the cache file --------------------------------------------------------------------

    def _load(self) -> _CacheFile | None:
        """The cache file's contents; None when absent, unreadable or corrupt (logged)."""
        try:
            text = self.cache_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("scatter backend cache %s unreadable (%s): ignored", self.cache_path, err)
            return None
        try:
            return _CacheFile.model_validate(json.loads(text))
        except (ValueError, ValidationError) as err:
            reason = str(err).splitlines()[0]
            log.warning(
                "scatter backend cache %s is corrupt (%s): ignored, it will be rewritten",
                self.cache_path,
                reason,
            )
            return None

    def _read(self, key: str) -> _CacheEntry | None:
        cache = self._load()
        return None if cache is None else cache.entries.get(key)

    def _write(self, key: str, entry: _CacheEntry) -> None:
        """Merge `entry` into the file, atomically (a temporary file renamed over it): jobs of a
        parallel sweep may write at once; the last one wins, and no reader sees half a file."""
        cache = self._load() or _CacheFile(format=CACHE_FORMAT, entries={})
        entries = {**cache.entries, key: entry}
        payload = _CacheFile(format=CACHE_FORMAT, entries=entries).model_dump_json(indent=1)
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=self.cache_path.parent, prefix=".scatter_backends.", suffix=".tmp"
            )
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(payload)
                os.replace(tmp, self.cache_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            log.warning(
                "scatter backend cache %s not written (%s): the choice holds for this run only",
                self.cache_path,
                err,
            )


def _probe(device: torch.device) -> str | None:
    """Why torch-scatter cannot run on `device` (a CPU-only build and a GPU), or None."""
    try:
        src = torch.ones(2, 1, device=device)
        index = torch.zeros(2, dtype=torch.long, device=device)
        for reduce in REDUCTIONS:
            scatter(src, index, 1, reduce, "torch_scatter")
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    return None


def cache_key(
    device: torch.device,
    torch_scatter_version: str | None,
    edges: int,
    features: int,
    passes: Passes = "forward+backward",
) -> str:
    """What a measurement depends on: the device (a GPU by name, a CPU by its thread count),
    torch and torch-scatter versions, the shapes bucket and the passes timed."""
    if device.type == "cuda":
        where = f"cuda:{torch.cuda.get_device_name(device)}"
    elif device.type == "cpu":
        where = f"cpu:{torch.get_num_threads()}threads"
    else:
        where = device.type
    return (
        f"{where}|torch={torch.__version__}|torch_scatter={torch_scatter_version or 'absent'}"
        f"|edges={edges}|features={features}|{passes}"
    )
