"""Kernel requests and attachment: from a germination to a seed module in its slot.

A germination requests its kernel and returns at once; the slot waits in GERMINATED. At each
control step `collect()` attaches the kernels that are due and hands back the failures, which
the control step culls: this module never changes a slot's lifecycle on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from esper import blueprints as blueprint_registry
from esper.atomic import WriteError
from esper.config import BlueprintsConfig, ConfigError
from esper.contracts import (
    KernelLatency,
    KernelLoaded,
    KernelQuarantined,
    KernelRequested,
    KernelSpec,
)
from esper.events import EventBus
from esper.kernels import CompileMachineryError, KernelLibrary, KernelRequest, LoadedKernel
from esper.kernels.claims import WaitInterrupted
from esper.kernels.compiler import failure_said, percentile
from esper.seeds import MorphogeneticModel, SeedSlot
from esper.training.steps import Clock


def run_kernel_spec(
    settings: BlueprintsConfig, blueprint: str, shape: tuple[int, ...], device_type: str
) -> KernelSpec:
    """The spec of `blueprint`'s kernel at a slot of `shape`, under a run's `blueprints`
    settings (its hyper-parameters and init seed)."""
    return blueprint_registry.kernel_spec(
        blueprint, shape, settings.hparams.get(blueprint), settings.init_seed, device_type
    )


def checkpointed_kernel(
    library: KernelLibrary, spec: KernelSpec, kernel_id: str, slot: str, key: str = "trainer.resume"
) -> LoadedKernel:
    """The kernel a checkpoint's slot held, from the library; refused where the library now
    gives another kernel for the same spec (another store, or changed blueprint code)."""
    loaded = library.get(spec)
    if loaded.metadata.kernel_id != kernel_id:
        raise ConfigError(
            f"{key}: slot {slot}: the checkpoint used kernel {kernel_id[:16]}, the kernel "
            f"library now gives {loaded.metadata.kernel_id[:16]} for its spec: the store "
            "(storage.*), the blueprint's code or the host differs from the run's"
        )
    return loaded


@dataclass
class PendingKernel:
    request: KernelRequest | None
    """None on a ddp follower rank: it asks nothing and mirrors rank 0's outcome."""
    requested_at: float
    due_epoch: int | None
    spec: KernelSpec


@dataclass(frozen=True)
class KernelFailure:
    """A kernel that could not be built or loaded for a germinated slot."""

    slot: SeedSlot
    error: str


@dataclass
class Collected:
    """What one collect() did: slots that got their kernel, and kernels that failed."""

    attached: list[SeedSlot] = field(default_factory=list)
    failed: list[KernelFailure] = field(default_factory=list)


class KernelAttachment:
    """Pending kernel requests of one run, attached on a schedule that does not depend on
    compile speed (`wait_epochs`), with the events that tell where each kernel came from."""

    def __init__(
        self,
        model: MorphogeneticModel,
        library: KernelLibrary,
        bus: EventBus,
        clock: Clock,
        device: torch.device,
        blueprints: BlueprintsConfig,
        wait_epochs: int | None,
        follower: bool = False,
    ) -> None:
        self.model = model
        self.follower = follower
        """A ddp rank other than 0: it never requests or compiles; `mirror` attaches what rank
        0 attached, loading each kernel from the store (rank 0 stored it first)."""
        self.library = library
        self.bus = bus
        self.clock = clock
        self.device = device
        self.blueprints = blueprints
        self.wait_epochs = wait_epochs
        self.blocked_s = 0.0
        self._pending: dict[str, PendingKernel] = {}
        self.latency_us: dict[str, float] = {}
        """Per slot with a kernel: its characterised forward latency, what the policy observes.
        Measured once when the kernel was compiled and stored with it, so two runs of one seed
        see the same number; the training-pass samples (`KernelLatency`) are wall-clock noise
        and made the GNN's probabilities differ between two such runs."""

    def spec(self, blueprint: str, shape: tuple[int, ...]) -> KernelSpec:
        return run_kernel_spec(self.blueprints, blueprint, shape, self.device.type)

    def request(self, slot: SeedSlot, blueprint: str) -> None:
        """Ask the library for the slot's kernel; due `wait_epochs` control steps from now."""
        spec = self.spec(blueprint, slot.shape)
        request = None if self.follower else self._ask(spec, slot.name)
        due = None if self.wait_epochs is None else self.clock.epoch + self.wait_epochs
        self._pending[slot.name] = PendingKernel(request, time.perf_counter(), due, spec)

    def forget(self, slot_name: str) -> None:
        """The slot's seed is gone (culled): its kernel, when it comes, is not attached."""
        self._pending.pop(slot_name, None)
        self.latency_us.pop(slot_name, None)

    def collect(self) -> Collected:
        """Attach kernels that are due and return the failures for the caller to cull.

        With `wait_epochs=k` a kernel is attached exactly k control steps after germination,
        waiting for the compile only if it is still running then: training overlaps the
        compile and the run does not depend on how fast it was. With None a kernel is attached
        whenever it is ready (more overlap, not reproducible).
        """
        collected = Collected()
        for name, pending in list(self._pending.items()):
            if pending.request is None:
                continue  # a follower's: attached by mirror()
            if pending.due_epoch is None:
                if not pending.request.done():
                    continue
            elif self.clock.epoch < pending.due_epoch:
                continue
            elif not pending.request.done():
                started = time.perf_counter()
                pending.request.wait()
                self.blocked_s += time.perf_counter() - started
            del self._pending[name]
            slot = self.model.slot(name)
            try:
                loaded = pending.request.result()
            except (CompileMachineryError, WaitInterrupted, WriteError):
                # no seed's fault: the run fails (or ends interrupted) rather than culling. A
                # store that cannot be written (a full disk) culled every seed, and the run
                # completed as a static one, said only in each cull's reason.
                raise
            except Exception as exc:  # noqa: BLE001 - handed back as the failure's error
                collected.failed.append(KernelFailure(slot, failure_said(exc)))
                continue
            self._attach(slot, loaded, pending.requested_at)
            collected.attached.append(slot)
        self.library.finish_ready()
        self._publish_quarantines()
        return collected

    def outcome(self, collected: Collected) -> list[tuple[str, str | None, str | None]]:
        """What collect() did, for the followers: (slot, kernel id, None) for each attachment,
        (slot, None, error) for each failure, in order."""
        done: list[tuple[str, str | None, str | None]] = [
            (slot.name, slot.kernel_id, None) for slot in collected.attached
        ]
        return done + [(f.slot.name, None, f.error) for f in collected.failed]

    def mirror(self, outcome: list[tuple[str, str | None, str | None]]) -> Collected:
        """A follower rank: attach what rank 0 attached (the same kernel, from the store) and
        hand back the same failures, so every rank changes morphology in the same step."""
        collected = Collected()
        for name, kernel_id, error in outcome:
            pending = self._pending.pop(name)
            slot = self.model.slot(name)
            if error is not None:
                collected.failed.append(KernelFailure(slot, error))
                continue
            loaded = self.library.get(pending.spec)
            if loaded.metadata.kernel_id != kernel_id:
                raise RuntimeError(
                    f"ddp: rank 0 attached kernel {str(kernel_id)[:16]} to {name}, the store "
                    f"gave {loaded.metadata.kernel_id[:16]}"
                )
            self._attach(slot, loaded, pending.requested_at)
            collected.attached.append(slot)
        self._publish_quarantines()
        return collected

    def _attach(self, slot: SeedSlot, loaded: LoadedKernel, requested_at: float) -> None:
        slot.attach(loaded.module.to(self.device), loaded.metadata.kernel_id)
        meta = loaded.metadata
        self.latency_us[slot.name] = meta.latency_us_p50
        self.bus.publish(
            KernelLoaded(
                epoch=self.clock.epoch,
                step=self.clock.step,
                slot=slot.name,
                kernel_id=meta.kernel_id,
                blueprint=meta.spec.blueprint,
                source=loaded.source,
                wait_s=time.perf_counter() - requested_at,
                compile_s=meta.compile_s,
                params=meta.param_count,
                latency_us_p50=meta.latency_us_p50,
                latency_us_p95=meta.latency_us_p95,
                latency_batch=meta.latency_batch,
                characterisation=list(meta.characterisation),
            )
        )

    def _publish_quarantines(self) -> None:
        for notice in self.library.drain_quarantines():
            self.bus.publish(
                KernelQuarantined(
                    epoch=self.clock.epoch,
                    step=self.clock.step,
                    kernel_id=notice.kernel_id,
                    location=notice.location,
                    error=notice.error,
                )
            )

    def _offered(self, allowed: dict[str, tuple[str, ...]]) -> dict[str, KernelSpec]:
        """Every kernel a germination could ask for: blueprint x slot shape, by spec key."""
        specs = (
            self.spec(blueprint, slot.shape)
            for slot in self.model.iter_slots()
            for blueprint in allowed[slot.name]
        )
        return {spec.key(): spec for spec in specs}

    def any_missing(self, allowed: dict[str, tuple[str, ...]]) -> bool:
        """Whether some kernel a germination could ask for is neither cached nor stored, so
        that the compile worker is started only when something may need compiling."""
        return not all(self.library.has(key) for key in self._offered(allowed))

    def prewarm(self, allowed: dict[str, tuple[str, ...]]) -> None:
        """Request every offered blueprint at every slot shape, so germinations find them ready."""
        for spec in self._offered(allowed).values():
            self._ask(spec, "prewarm")

    def _ask(self, spec: KernelSpec, requester: str) -> KernelRequest:
        """Request `spec` from the library and say so (`requester`: a slot, or `prewarm`)."""
        request = self.library.request(spec)
        self.bus.publish(
            KernelRequested(
                epoch=self.clock.epoch,
                step=self.clock.step,
                slot=requester,
                blueprint=spec.blueprint,
                spec_key=spec.key(),
                ready=request.done(),
            )
        )
        return request

    def publish_latencies(self) -> None:
        """The training-pass latency samples each attached kernel took this epoch."""
        for slot in self.model.iter_slots():
            samples = slot.collect_latencies()
            if not samples or slot.kernel_id is None:
                continue
            self.bus.publish(
                KernelLatency(
                    epoch=self.clock.epoch,
                    step=self.clock.step,
                    slot=slot.name,
                    kernel_id=slot.kernel_id,
                    blueprint=slot.blueprint or "",
                    samples=len(samples),
                    latency_us_p50=percentile(samples, 50),
                    latency_us_p95=percentile(samples, 95),
                )
            )

    def module_for(self, slot: SeedSlot, blueprint: str, kernel_id: str) -> torch.nn.Module:
        """The kernel a checkpointed slot held, from the library; refused if the library now
        builds a different kernel for the same spec."""
        loaded = checkpointed_kernel(
            self.library, self.spec(blueprint, slot.shape), kernel_id, slot.name
        )
        self.latency_us[slot.name] = loaded.metadata.latency_us_p50
        return loaded.module.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "pending": {
                name: {"spec": p.spec.model_dump(mode="json"), "due_epoch": p.due_epoch}
                for name, p in self._pending.items()
            },
            "blocked_s": self.blocked_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, pending in state["pending"].items():
            spec = KernelSpec.model_validate(pending["spec"])
            self._pending[name] = PendingKernel(
                self.library.request(spec), time.perf_counter(), pending["due_epoch"], spec
            )
        self.blocked_s = state["blocked_s"]
