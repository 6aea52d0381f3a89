"""SeedSlot: one site's seed, its lifecycle, gradient isolation and blending.

A dormant slot is not in the forward pass at all: the slot hooks its site module only while it
has a seed in the forward (TRAINING, BLENDING, FOSSILIZED), so an all-dormant model runs exactly
the host's code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from esper.contracts import ActivationKind, SeedState, activation_kind
from esper.seeds.lifecycle import ACTIVE_FORWARD, Lifecycle, check_transition

S = SeedState
TransitionCallback = Callable[["SeedSlot", SeedState, SeedState, str], None]


class SeedSlot(nn.Module):
    def __init__(
        self,
        name: str,
        site: nn.Module,
        shape: tuple[int, ...],
        embargo_epochs: int = 2,
        latency_sample_every: int = 25,
        fossilized_trainable: bool = True,
    ) -> None:
        super().__init__()
        self.name = name
        self.shape = tuple(shape)
        self.kind: ActivationKind = activation_kind(self.shape)
        self.embargo_epochs = embargo_epochs
        self.latency_sample_every = latency_sample_every
        self.fossilized_trainable = fossilized_trainable
        self._site = (site,)  # a tuple keeps the host's module out of this slot's children
        self._hook: RemovableHandle | None = None
        self.on_transition: TransitionCallback | None = None
        self.life = Lifecycle(name)
        self.seed: nn.Module | None = None
        self.blueprint: str | None = None
        self.kernel_id: str | None = None
        self.alpha = 0.0
        self.blend_steps = 1
        self.blend_step = 0
        self.probation_steps = 0
        self.embargo_left = 0
        self.bypass = False
        self.merged = False
        self.tried: dict[str, int] = {}
        self._calls = 0
        self.latency_samples_us: list[float] = []
        self._cuda_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def site(self) -> nn.Module:
        """The host module this slot follows (not a child of the slot: the host owns it)."""
        return self._site[0]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def state(self) -> SeedState:
        return self.life.state

    @property
    def epochs_in_state(self) -> int:
        return self.life.epochs_in_state

    @property
    def steps_in_state(self) -> int:
        return self.life.steps_in_state

    @property
    def grad_norm_max(self) -> float:
        return float(self.life.grad_norm_max)

    def _set_state(self, target: SeedState, reason: str) -> None:
        current = self.life.move(target)
        wants_hook = target in ACTIVE_FORWARD
        if wants_hook and self._hook is None:
            self._hook = self._site[0].register_forward_hook(self._after_site)
        elif not wants_hook and self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.on_transition is not None:
            self.on_transition(self, current, target, reason)

    def germinate(self, blueprint: str, reason: str = "") -> None:
        check_transition(self.name, self.state, S.GERMINATED)
        self.blueprint = blueprint
        self.tried[blueprint] = self.tried.get(blueprint, 0) + 1
        self._set_state(S.GERMINATED, reason)

    def attach(self, module: nn.Module, kernel_id: str) -> None:
        """Give a germinated slot its kernel; it stays GERMINATED until told to train."""
        if self.state is not S.GERMINATED:
            raise RuntimeError(f"slot {self.name}: attach needs GERMINATED, not {self.state.value}")
        self.seed = module
        self.kernel_id = kernel_id
        self.latency_samples_us = []

    @property
    def kernel_ready(self) -> bool:
        return self.seed is not None

    def start_training(self, reason: str = "") -> None:
        if self.state is S.GERMINATED and self.seed is None:
            raise RuntimeError(f"slot {self.name}: cannot train before its kernel is attached")
        self._set_state(S.TRAINING, reason)

    def start_blending(self, steps: int, reason: str = "", probation_steps: int = 0) -> None:
        """Ramp alpha from 0 to 1 over `steps` training steps; a verdict is due
        `probation_steps` steps after the ramp ends (`seeds.probation_epochs`)."""
        self._set_state(S.BLENDING, reason)
        self.blend_steps = max(1, int(steps))
        self.blend_step = 0
        self.probation_steps = max(0, int(probation_steps))
        self.alpha = 0.0

    @property
    def steps_to_verdict(self) -> int:
        """BLENDING: training steps left of the ramp and the probation after it; else 0."""
        if self.state is not S.BLENDING:
            return 0
        return max(0, self.blend_steps + self.probation_steps - self.blend_step)

    def fossilize(self, reason: str = "") -> None:
        self._set_state(S.FOSSILIZED, reason)
        self.alpha = 1.0
        if not self.fossilized_trainable and self.seed is not None:
            self.seed.requires_grad_(False)

    def snapshot(self) -> dict[str, Any]:
        """Lifecycle bookkeeping for a checkpoint (the seed's weights go in the state dict)."""
        return {
            "state": self.state.value,
            "blueprint": self.blueprint,
            "kernel_id": self.kernel_id,
            "alpha": self.alpha,
            "blend_steps": self.blend_steps,
            "blend_step": self.blend_step,
            "probation_steps": self.probation_steps,
            "epochs_in_state": self.epochs_in_state,
            "steps_in_state": self.steps_in_state,
            "grad_norm_max": self.grad_norm_max,
            "embargo_left": self.embargo_left,
            "tried": dict(self.tried),
            "merged": self.merged,
            "calls": self._calls,
        }

    def restore(self, snapshot: dict[str, Any], module: nn.Module | None) -> None:
        """Put the slot back as it was, with its kernel module (no transition is replayed)."""
        life = self.life
        life.state = SeedState(snapshot["state"])
        life.epochs_in_state = snapshot["epochs_in_state"]
        life.steps_in_state = snapshot["steps_in_state"]
        life.grad_norm_max = snapshot["grad_norm_max"]
        self.blueprint = snapshot["blueprint"]
        self.kernel_id = snapshot["kernel_id"]
        self.seed = module
        for key in ("alpha", "blend_steps", "blend_step", "embargo_left", "merged"):
            setattr(self, key, snapshot[key])
        self.probation_steps = snapshot.get("probation_steps", 0)  # absent before probation
        self.tried = dict(snapshot["tried"])
        self._calls = snapshot["calls"]
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.state in ACTIVE_FORWARD and self.seed is not None:
            self._hook = self._site[0].register_forward_hook(self._after_site)
        if self.state is S.FOSSILIZED and not self.fossilized_trainable and self.seed is not None:
            self.seed.requires_grad_(False)

    def detach_seed(self) -> None:
        """The seed's function now lives in the host (merged): leave the forward pass."""
        self.seed = None
        self.merged = True
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def cull(self, reason: str = "") -> None:
        self._set_state(S.CULLED, reason)
        self.seed = None
        self.kernel_id = None
        self.alpha = 0.0
        self.embargo_left = self.embargo_epochs

    def tick(self) -> None:
        """One control step has passed: count time in state and run down a cull's embargo."""
        self.life.epochs_in_state += 1
        if self.state is S.CULLED:
            self.embargo_left = max(0, self.embargo_left - 1)
            if self.embargo_left == 0:
                self.blueprint = None
                self._set_state(S.DORMANT, "embargo over")

    # -- forward ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> SeedSlot:
        # Kernels are exported graphs with no train/eval behaviour (and refuse .train()).
        self.training = mode
        return self

    def _after_site(self, module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        return self.forward(output)

    def _seed(self, x: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        if self._calls % self.latency_sample_every:
            return self.seed(x)  # type: ignore[misc]
        if x.is_cuda:
            # Events are only recorded here; they are read at the end of the epoch
            # (collect_latencies), so the training step never waits for the GPU.
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
            out = self.seed(x)  # type: ignore[misc]
            end_event.record()
            self._cuda_events.append((start_event, end_event))
            return out
        start = time.perf_counter()
        out = self.seed(x)  # type: ignore[misc]
        self.latency_samples_us.append((time.perf_counter() - start) * 1e6)
        return out

    def collect_latencies(self) -> list[float]:
        """Latency samples in microseconds, GPU events resolved now (epoch end, not per step)."""
        for start_event, end_event in self._cuda_events:
            end_event.synchronize()
            self.latency_samples_us.append(start_event.elapsed_time(end_event) * 1e3)
        self._cuda_events = []
        return self.latency_samples_us

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state
        if self.bypass or self.seed is None or state not in ACTIVE_FORWARD:
            return x
        if state is S.TRAINING:
            # Forward is bitwise the host's; the seed learns from dL/dx, the host is untouched.
            s = self._seed(x.detach())
            return x + (s - s.detach())
        if state is S.BLENDING:
            if self.training:
                self.blend_step += 1
                self.alpha = min(1.0, self.blend_step / self.blend_steps)
            return x + self.alpha * self._seed(x)
        return x + self._seed(x)

    @property
    def in_forward(self) -> bool:
        return self.seed is not None and self.state in ACTIVE_FORWARD and not self.bypass

    def seed_gradients(self) -> list[torch.Tensor]:
        return [p.grad for p in self.seed_parameters() if p.grad is not None]

    def seed_parameters(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    def extra_repr(self) -> str:
        return f"name={self.name}, shape={list(self.shape)}, state={self.state.value}"
