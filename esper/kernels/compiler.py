"""Blueprint -> kernel: torch.export with a dynamic batch, checked against eager, then timed."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from esper import blueprints
from esper.config import first_line, reason, some_of
from esper.contracts import KernelMetadata, KernelSpec, LatencyPoint
from esper.kernels.integrity import KernelIntegrityError, UnsafeArtifactError
from esper.kernels.safe_load import load_program

PROBE_BATCH = 8
VALIDATION_BATCH = 5
MAX_BATCH = 1 << 20
TORCH_EXPORT_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch.export._trace")
"""What torch.export logs about a failed trace, beside the exception we report."""


class KernelValidationError(RuntimeError):
    """An exported kernel Esper will not run: it differs from eager, changes the shape, or
    computes differently in evaluation than in training (its message says which)."""


class StaleKernelError(RuntimeError):
    """A stored kernel that is not what its blueprint builds in this process: code its key's
    digest cannot see changed (a module the builder imports by name, a file it reads)."""


class KernelExportError(RuntimeError):
    """torch.export could not trace a blueprint: the original error's type and message as
    plain text (torch's own exceptions lose their message when pickled out of the compile
    worker: a seed was culled for "GuardOnDataDependentSymNode: " and nothing after it)."""


def failure_said(exc: BaseException) -> str:
    """A failed compile in one line, as preflight and a culled seed's reason say it, with the
    blueprint's line torch blames where it names one (its `Caused by: (file:line in forward)`,
    further down a long message)."""
    ours = isinstance(exc, KernelExportError | KernelValidationError)  # their text says it
    said = reason(exc) if ours else first_line(exc)
    cause = re.search(r"^Caused by: \((.+)\)$", str(exc), re.MULTILINE)
    return f"{said} (caused by {cause.group(1)})" if cause else said


def mode_dependence(program: ExportedProgram) -> str | None:
    """What in an exported seed would behave as in training when the model is evaluated, said,
    or None. A kernel is exported once, from training mode, and the graph keeps what that mode
    did: a Dropout still drops and a BatchNorm still normalises with the batch's statistics
    after `model.eval()` (measured: two eval forwards of a Dropout seed's kernel differ), so
    val and test would be drawn at random or depend on the batch. helper-found: such a seed
    passed the contract (zero at birth, whatever it draws) and its kernel validated equal to
    eager (both zero). A BatchNorm without running statistics uses the batch's in both modes,
    as its eager module does: allowed."""
    for node in program.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        name = target.name().removesuffix(".default").replace("::", ".")
        schema = target._schema.arguments
        arguments = {a.name: a.default_value for a in schema if a.has_default_value()}
        arguments.update(zip((a.name for a in schema), node.args, strict=False))
        arguments.update(node.kwargs)
        if torch.Tag.nondeterministic_seeded in target.tags:
            # attention's dropout_p=0, Dropout(p=0) or in eval: deterministic all the same
            drops = arguments.get("dropout_p", arguments.get("p"))
            if not (drops == 0 or arguments.get("train") is False):
                return f"draws random numbers ({name}: Dropout, or a random draw in its forward)"
        if arguments.get("training") is True and arguments.get("running_mean") is not None:
            return f"normalises with the batch's statistics ({name} in training mode: BatchNorm)"
    return None


def _refuse_mode_dependence(program: ExportedProgram) -> None:
    said = mode_dependence(program)
    if said is not None:
        raise KernelValidationError(
            f"its forward {said}; a kernel runs as exported, from training mode, in evaluation "
            "too; allowed: layers that compute the same in both (no Dropout or random draws; "
            "GroupNorm or LayerNorm for BatchNorm)"
        )


def _as_trained(module: nn.Module) -> nn.Module:
    """`module` (a fresh build, changed in place) with random weights (its own generator: the
    run's streams are not drawn from), as training might leave them: at birth every seed
    computes zero. A build, not a deep copy: a module holding a computed tensor (the old
    `nn.utils.weight_norm`'s `weight`) cannot be deep-copied (helper-found)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator).to(p.device, p.dtype) * 0.5)
    return module


def _build(spec: KernelSpec) -> nn.Module:
    return blueprints.build(spec.blueprint, spec.input_shape, spec.hparams, spec.init_seed).to(
        spec.device
    )


def _compare_trained(spec: KernelSpec, program: ExportedProgram, probe: torch.Tensor) -> None:
    """The kernel against its eager module with weights as training leaves them (random, not
    the zero of birth, where every seed gives zero): in training mode, and in evaluation mode,
    which the kernel, exported from training mode, does not have. helper-found: a seed whose
    forward branches on `self.training` passed (both outputs zero at birth), and its kernel
    computed the training branch in evaluation too."""
    trained = _as_trained(_build(spec))
    kernel = instantiate(program)
    kernel.load_state_dict(trained.state_dict())
    with torch.no_grad():
        actual = kernel(probe)
        for mode in ("training", "evaluation"):
            trained.train(mode == "training")
            expected = trained(probe)
            if not torch.allclose(expected, actual, rtol=1e-4, atol=1e-5):
                diff = (expected - actual).abs().max().item()
                if mode == "training":
                    raise KernelValidationError(
                        f"exported kernel differs from eager by {diff:.3g} once trained"
                    )
                raise KernelValidationError(
                    f"its forward computes otherwise in evaluation (by {diff:.3g} once "
                    "trained: a branch on self.training?); a kernel runs as exported, from "
                    "training mode, in evaluation too; allowed: a forward that computes the "
                    "same in both"
                )


def check_against_builder(spec: KernelSpec, program: ExportedProgram) -> nn.Module:
    """Refuse a stored kernel unlike what `spec`'s blueprint builds now: other parameters,
    other initial weights, or another output once trained (on training-mode weights, as the
    kernel was exported). The kernel key names the builder's source and the modules it imports
    (`code_digest`), not a module it imports by name or a file it reads (initial weights, a
    width): found by a helper, a run handed back the kernel of a builder that had since read
    another file. One eager build and a forward of a few rows a kernel and process. Returns
    the kernel module it checked, with its stored weights back: the first seed to take the
    kernel takes it, so a load from a store instantiates the program once, as before."""
    name = f"blueprint {spec.blueprint!r}"
    eager = _build(spec)
    kernel = instantiate(program)
    built, stored = eager.state_dict(), kernel.state_dict()
    shapes = {k: list(v.shape) for k, v in stored.items()}
    wanted = {k: list(v.shape) for k, v in built.items()}
    if shapes != wanted:
        differ = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        said = some_of([f"{k} {shapes.get(k, '-')} -> {wanted.get(k, '-')}" for k in differ])
        raise StaleKernelError(
            f"the store's kernel has other parameters than {name} builds now ({said})"
        )
    for key, tensor in built.items():
        if not torch.allclose(tensor, stored[key], rtol=1e-5, atol=1e-6):
            diff = (tensor - stored[key]).abs().max().item()
            raise StaleKernelError(
                f"the store's kernel starts from other weights than {name} builds now "
                f"({key} differs by {diff:.3g})"
            )
    as_stored = {key: tensor.clone() for key, tensor in stored.items()}
    trained = _as_trained(eager).train()  # compared already: its weights may change
    kernel.load_state_dict(trained.state_dict())
    probe = _probe(spec, VALIDATION_BATCH, seed=1)
    with torch.no_grad():
        expected, actual = trained(probe), kernel(probe)
    kernel.load_state_dict(as_stored)
    if expected.shape != actual.shape or not torch.allclose(expected, actual, rtol=1e-4, atol=1e-5):
        diff = (expected - actual).abs().max().item() if expected.shape == actual.shape else None
        said = f"by {diff:.3g} once trained" if diff is not None else "in shape"
        raise StaleKernelError(
            f"the store's kernel computes otherwise than {name} builds now ({said})"
        )
    return kernel


@dataclass
class CompiledKernel:
    metadata: KernelMetadata
    artifact: bytes
    program: ExportedProgram


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _probe(spec: KernelSpec, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *spec.input_shape), generator=generator).to(spec.device)


def load_artifact(artifact: bytes, kernel_id: str) -> ExportedProgram:
    """Refuse bytes whose SHA-256 is not the id they were asked for under, then load them as
    data only (safe_load). The id comes from the same store as the bytes, so the hash proves
    integrity, not trust: a writer can plant an artifact with a matching index entry."""
    actual = sha256(artifact)
    if actual != kernel_id:
        raise KernelIntegrityError(
            f"kernel {kernel_id[:16]}: artifact SHA-256 is {actual[:16]}, not its id; "
            f"the object is corrupted or was tampered with ({len(artifact)} bytes)"
        )
    try:
        program = load_program(artifact)
    except UnsafeArtifactError as exc:
        raise UnsafeArtifactError(f"kernel {kernel_id[:16]}: {exc}") from None
    said = mode_dependence(program)  # a store's kernel from before the rule, or planted
    if said is not None:
        raise UnsafeArtifactError(
            f"kernel {kernel_id[:16]}: its forward {said}, in evaluation as in training"
        )
    return program


def instantiate(program: ExportedProgram) -> nn.Module:
    """A fresh trainable module: ExportedProgram.module() shares its tensors, so copy them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = copy.deepcopy(program.module())
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _timed_us(
    fn: Callable[[], object], device: torch.device, runs: int, warmup: int
) -> list[float]:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timings: list[float] = []
    for i in range(warmup + runs):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1e6)
    return timings


def measure_latency(
    module: nn.Module, example: torch.Tensor, runs: int = 30, warmup: int = 5
) -> LatencyPoint:
    """p50/p95 of forward (no autograd) and of forward + backward, on the example's device."""

    def forward() -> None:
        with torch.no_grad():
            module(example)

    grad_example = example.detach().requires_grad_(True)
    upstream = torch.ones_like(example)

    def forward_backward() -> None:
        module(grad_example).backward(upstream)

    fwd = _timed_us(forward, example.device, runs, warmup)
    fwd_bwd = _timed_us(forward_backward, example.device, runs, warmup)
    module.zero_grad(set_to_none=True)
    return LatencyPoint(
        batch=len(example),
        forward_us_p50=percentile(fwd, 50),
        forward_us_p95=percentile(fwd, 95),
        forward_backward_us_p50=percentile(fwd_bwd, 50),
        forward_backward_us_p95=percentile(fwd_bwd, 95),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100.0
    lo, hi = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@contextlib.contextmanager
def _export_quietly() -> Iterator[None]:
    """torch.export prints a failed trace's partial graph to stderr and logs a warning per
    unhinted symbol: twenty lines before the one line naming the blueprint and its error
    (adversarial case A80). They are held back; the exception says what went wrong. Export
    runs alone in its process (below), so stderr is not taken from anything else."""
    loggers = [logging.getLogger(name) for name in TORCH_EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def compile_kernel(
    spec: KernelSpec, latency_batches: Sequence[int] = (1, 64), reference_batch: int = 64
) -> CompiledKernel:
    """Export, check against eager, and characterise at each batch size in `latency_batches`.

    `reference_batch` (one of them) gives the headline p50/p95 reported per kernel. Export
    switches process-wide flags while it traces: never run this beside training in a thread
    (the library uses a worker process).
    """
    if reference_batch not in latency_batches:
        latency_batches = (*latency_batches, reference_batch)
    start = time.perf_counter()
    eager = _build(spec)
    example = _probe(spec, PROBE_BATCH, seed=0)
    with _export_quietly():
        try:
            program = torch.export.export(
                eager, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},)
            )
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds; the text is kept
            raise KernelExportError(f"{type(exc).__name__}: {exc}") from None
        _refuse_mode_dependence(program)
        for node in program.graph.nodes:
            # Source paths would make the same kernel hash differently on every checkout.
            node.meta.pop("stack_trace", None)
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
    artifact = buffer.getvalue()
    kernel_id = sha256(artifact)
    loaded_program = load_artifact(artifact, kernel_id)
    loaded = instantiate(loaded_program)
    probe = _probe(spec, VALIDATION_BATCH, seed=1)
    with torch.no_grad():
        expected, actual = eager(probe), loaded(probe)
    if expected.shape != probe.shape or actual.shape != probe.shape:
        raise KernelValidationError(
            f"blueprint {spec.blueprint}: output shape {list(actual.shape)} differs from input "
            f"shape {list(probe.shape)}"
        )
    if not torch.allclose(expected, actual, rtol=1e-5, atol=1e-6):
        diff = (expected - actual).abs().max().item()
        raise KernelValidationError(
            f"blueprint {spec.blueprint}: exported kernel differs from eager by {diff:.3g}"
        )
    _compare_trained(spec, loaded_program, probe)
    compile_s = time.perf_counter() - start
    points = tuple(
        measure_latency(loaded, _probe(spec, batch, seed=2)) for batch in sorted(latency_batches)
    )
    reference = next(p for p in points if p.batch == reference_batch)
    metadata = KernelMetadata(
        kernel_id=kernel_id,
        spec_key=spec.key(),
        spec=spec,
        param_count=parameter_count(loaded),
        artifact_bytes=len(artifact),
        latency_us_p50=reference.forward_us_p50,
        latency_us_p95=reference.forward_us_p95,
        latency_batch=reference_batch,
        characterisation=points,
        compile_s=compile_s,
    )
    return CompiledKernel(metadata, artifact, loaded_program)
