"""Data-parallel training (`torchrun --nproc_per_node=N run.py trainer.strategy=ddp`).

Every rank holds the whole model and walks the same global batches (the loaders shuffle from
their own seeded generators); each rank computes the gradient of its slice of each batch, and
one all-reduce a step sums them, weighted by slice size, together with the loss. So every rank
takes the same optimizer step and the same skip decision, and the parameters stay bitwise
equal. Rank 0 runs the policy and broadcasts its decisions; every rank applies them in the same
control step, so the morphology is identical everywhere. Only rank 0 writes (events.jsonl,
summary.json, checkpoints, W&B) and compiles kernels; the other ranks load them from the store.

Why an all-reduce of the current parameters' gradients and not `DistributedDataParallel`:
seeds join and leave the parameter set during training; DDP fixes its buckets at construction
and would have to be rebuilt on every morphology change (a new process-group handshake each
time). Flattening whatever gradients exist at this step costs one `all_reduce` a step either
way; the benchmark in `tests/benchmarks/test_ddp.py` reports the 2-rank/1-rank epoch ratio.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from esper.atomic import WriteError
from esper.config import ConfigError
from esper.policy.contract import PolicyError

T = TypeVar("T")


class RankZeroFailed(RuntimeError):
    """On a rank other than 0: rank 0 failed in a step it runs alone (a bug in a policy, say)
    and printed its traceback; this rank cannot go on without it."""


def _agreed(stopping: int | None, stopped: float, signals: float) -> int | None:
    """The stop a rank takes once the ranks summed theirs: its own signal, else the others'
    (`stopped` ranks saw one, their numbers summing to `signals`), or SIGTERM where ranks that
    got different signals averaged to none of them; None where no rank saw one."""
    if stopping is not None or stopped <= 0:
        return stopping
    number = round(signals / stopped)
    return (
        number if number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) else int(signal.SIGTERM)
    )


@dataclass
class Ranks:
    """This process's place in the job; `world == 1` is the ordinary single-process run."""

    rank: int = 0
    world: int = 1
    failure_told: bool = False
    """Rank 0 failed in `from_rank_zero` and every rank was told: they all stop."""

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run's files (rank 0 only)."""
        return self.rank == 0

    # -- a global batch, a slice per rank ---------------------------------------------------
    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.distributed:
            return x, y
        return torch.tensor_split(x, self.world)[self.rank], torch.tensor_split(y, self.world)[
            self.rank
        ]

    def reduce_step(
        self,
        loss: torch.Tensor,
        count: int,
        params: Iterable[nn.Parameter],
        stopping: int | None = None,
    ) -> tuple[Any, int | None]:
        """Sum `loss * count` and each gradient `* count` over ranks, then divide by the global
        count: the gradient and loss of the whole batch, the same on every rank. One
        all-reduce, which also carries each rank's stop (`stopping`: the signal this rank
        received, or None). Returns (the global loss, a tensor; the signal every rank stops
        on after this step, or None).

        The stop is agreed here because a signal forwarded by torchrun reaches the ranks at
        different steps: the rank that saw it left its epoch and entered the epoch's sum while
        the other entered the next step's all-reduce (helper-found: gloo's "collective
        mismatch", a crash with no summary). A rank whose slice of a batch is empty (a last
        batch smaller than the ranks) ran no forward: it adds zeros, and a parameter that has
        a gradient on no rank keeps none (helper-found: its NaN loss skipped the step on every
        rank, each epoch, and at `dataset.batch_size=1` every step, said as a divergence)."""
        if not self.distributed:
            return loss.detach(), stopping
        params = [p for p in params if p.requires_grad]  # a frozen body's never have one
        scale = float(count)
        has = [p.grad is not None for p in params]
        grads = [p.grad * scale if p.grad is not None else torch.zeros_like(p) for p in params]
        told = [scale, 1.0 if stopping is not None else 0.0, float(stopping or 0), *map(float, has)]
        stats = torch.cat(  # no .item(): on a GPU that would wait for the step
            [
                (loss.detach() * scale).reshape(1),
                torch.tensor(told, dtype=loss.dtype, device=loss.device),
            ]
        )
        flat = _flatten_dense_tensors([*grads, stats])
        dist.all_reduce(flat)
        summed = flat[-len(stats) :]
        total = summed[1]
        _, stopped, signals, *anywhere = summed[1:].tolist()  # one wait for a GPU, not one a param
        for param, grad, computed in zip(
            params, _unflatten_dense_tensors(flat[: -len(stats)], grads), anywhere
        ):
            param.grad = grad / total if computed > 0 else None
        return summed[0] / total, _agreed(stopping, stopped, signals)

    def sum(
        self, values: list[float], stopping: int | None = None
    ) -> tuple[list[float], int | None]:
        """Element-wise sum over ranks (epoch counters), and the stop every rank agrees on
        (`stopping`: this rank's signal, or None), as `reduce_step` agrees it: a signal that
        came in the epoch's last step, after its all-reduce, on one rank alone."""
        if not self.distributed:
            return values, stopping
        told = [1.0 if stopping is not None else 0.0, float(stopping or 0)]
        tensor = torch.tensor([*values, *told], dtype=torch.float64)
        dist.all_reduce(tensor)
        summed = [float(v) for v in tensor]
        return summed[: len(values)], _agreed(stopping, summed[-2], summed[-1])

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (decisions, the run directory)."""
        if not self.distributed:
            return value
        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def from_rank_zero(self, step: Callable[[], T]) -> T:
        """`step()` on rank 0 (its files, its kernel store, its preflight, its policy), its
        value on every rank. If it raises, every rank stops: a WriteError, ConfigError or
        PolicyError is raised on every rank, the others saying `rank 0 ...`; any other
        exception is raised on rank 0 as it is (its traceback: a bug) and as `RankZeroFailed`
        on the others. Rank 0 alone used to stop, and the others, in their next collective,
        failed with a traceback (`Connection closed by peer`). Alone, `step()` as it is."""
        if not self.distributed:
            return step()
        value: T | None = None
        failure: tuple[str, int | None, str] | None = None
        raised: Exception | None = None
        if self.writer:
            try:
                value = step()
            except WriteError as exc:
                failure = ("write", exc.errno, str(exc.strerror or exc))
            except ConfigError as exc:
                failure = ("config", None, str(exc))
            except PolicyError as exc:
                failure = ("policy", None, str(exc))
            except Exception as exc:  # noqa: BLE001 - told to every rank, then raised here
                failure, raised = ("failed", None, f"{type(exc).__name__}: {exc}"), exc
        value, failure = self.broadcast((value, failure))
        if failure is None:
            return value
        self.failure_told = True
        kind, code, said = failure
        if raised is not None:
            raise raised
        if kind == "write":
            raise WriteError(code, said if self.writer else f"rank 0 {said}")
        if kind == "config":
            raise ConfigError(said if self.writer else f"rank 0: {said}")
        if kind == "policy":
            raise PolicyError(said if self.writer else f"rank 0: {said}")
        raise RankZeroFailed(f"rank 0 failed: {said} (rank 0 printed its traceback)")

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer, bytes in name order: equal digests on two ranks
    mean bitwise-equal models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ranks_from_env(strategy: str, device: str) -> Ranks:
    """`trainer.strategy=ddp`: join the process group torchrun describes in the environment
    (gloo on CPU, NCCL on CUDA). `single`: one process, no group."""
    if strategy == "single":
        world = os.environ.get("WORLD_SIZE", "1")
        if world.isdigit() and int(world) > 1:
            raise ConfigError(
                f"trainer.strategy=single under torchrun ({world} processes would each run, "
                "and write, the whole run): pass trainer.strategy=ddp, or start python run.py"
            )
        return Ranks()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "trainer.strategy=ddp needs torchrun (RANK and WORLD_SIZE are not set): "
            "torchrun --nproc_per_node=N run.py trainer.strategy=ddp"
        )
    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return Ranks(dist.get_rank(), dist.get_world_size())


def shut_down(failed: bool = False) -> None:
    """Leave the process group (a no-op outside ddp).

    `failed`: every rank stops with one failure (`Ranks.from_rank_zero`) and has said it. Wait
    (a minute at most) for the others first, with SIGTERM ignored: torchrun ends the ranks
    still running (SIGTERM) as soon as one exits with an error, and rank 0, still writing its
    summary when rank 1 was done, was cut short and said `interrupted` instead of its reason."""
    if not dist.is_initialized():
        return
    if failed:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the process is ending anyway
        with contextlib.suppress(Exception):  # a rank that is gone: leave all the same
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(minutes=1))
            else:
                dist.barrier()
    dist.destroy_process_group()
