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
20%; on a GPU the figures differ again. So `ScatterBackends.choose`
(`esper.policy.scatter_choice`) picks per reduction from a short measurement on the shapes it
will run, caches the choice and the figures on disk, and logs them, as a `BackendChoice`;
`policy.scatter_backend=torch|torch_scatter` fixes the backend instead.

Ties in `max`: the torch backend splits the gradient evenly between equal maxima, torch-scatter
gives it to one of them; on real-valued activations ties do not happen.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

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


# --- the per-reduction choice (made by `esper.policy.scatter_choice`) --------------------------------------------------------------


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
