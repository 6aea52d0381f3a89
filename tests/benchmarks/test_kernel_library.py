"""Kernel library: memory hit, cold load from the local store, load from S3 on loopback, and
compile time per blueprint. Targets (DESIGN.md): hit <= 10 us, cold local load <= 20 ms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from esper import blueprints
from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore, S3Store, compile_kernel
from tests.benchmarks.conftest import interleaved_ratio

SHAPES = {"vector": (64,), "image": (16, 8, 8)}


def spec_for(name: str) -> KernelSpec:
    shape = SHAPES[blueprints.get(name).kinds[0]]
    return KernelSpec(
        blueprint=name,
        input_shape=shape,
        torch_version=torch.__version__,
        hparams=blueprints.get(name).defaults,
    )


def inline_library(store) -> KernelLibrary:
    return KernelLibrary(store, latency_batches=(64,), reference_batch=64, async_compile=False)


def test_memory_hit(benchmark, tmp_path: Path) -> None:
    library = inline_library(LocalStore(tmp_path))
    spec = spec_for("residual_mlp")
    library.lookup(spec)
    benchmark.group = "kernel-library"
    benchmark(library.lookup, spec)
    median_us = benchmark.stats.stats.median * 1e6
    benchmark.extra_info.update(median_us=median_us, target_us=10)
    assert median_us <= 10


def test_cold_load_from_local_store(benchmark, tmp_path: Path) -> None:
    """What the first seed to take a stored kernel pays: the index, the file, its SHA-256,
    torch.export.load, the check against a fresh build of its blueprint, and a trainable
    module (the one the check instantiated)."""
    spec = spec_for("residual_mlp")
    inline_library(LocalStore(tmp_path)).lookup(spec)

    def cold() -> None:
        assert inline_library(LocalStore(tmp_path)).get(spec).source == "store"

    benchmark.group = "kernel-library"
    benchmark.pedantic(cold, rounds=30, warmup_rounds=2)
    median_ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info.update(median_ms=median_ms, target_ms=20)
    assert median_ms <= 20


def test_the_store_check_adds_little_to_a_cold_load(benchmark, tmp_path: Path) -> None:
    """A seed's cold load (the index, the file, its SHA-256, torch.export.load, the check
    against a fresh build of its blueprint, a trainable module, the index marked used) against
    the same load without the check (what a load was before it: the module instantiated from
    the program), interleaved in one run."""
    from esper.kernels.compiler import instantiate, load_artifact

    spec = spec_for("residual_mlp")
    inline_library(LocalStore(tmp_path)).lookup(spec)

    def checked() -> None:
        inline_library(LocalStore(tmp_path)).get(spec)

    def unchecked() -> None:
        store = LocalStore(tmp_path)
        found = store.find(spec.key())
        assert found is not None
        instantiate(load_artifact(store.get_artifact(found.kernel_id), found.kernel_id))
        store.touch(found.kernel_id)  # a load marks the kernel used, as the library does

    benchmark.group = "kernel-library"
    ratio, checked_us, unchecked_us = benchmark.pedantic(
        lambda: interleaved_ratio(checked, unchecked, rounds=15, calls=2), rounds=1
    )
    benchmark.extra_info.update(
        ratio=ratio, checked_ms=checked_us / 1e3, unchecked_ms=unchecked_us / 1e3, target=1.3
    )
    assert ratio <= 1.3


def test_a_cold_load_against_torch_export_load_alone(benchmark, tmp_path: Path) -> None:
    """What a cold load costs beyond torch.export.load of the same bytes (its floor: the
    index, the SHA-256, the safety rules, the check against a fresh build, the module, the
    index marked used), interleaved in one run: where the 20 ms target is missed, this says
    whether it is ours or torch's deserialisation."""
    import io

    spec = spec_for("residual_mlp")
    inline_library(LocalStore(tmp_path)).lookup(spec)
    store = LocalStore(tmp_path)
    found = store.find(spec.key())
    assert found is not None
    artifact = store.get_artifact(found.kernel_id)

    def cold() -> None:
        inline_library(LocalStore(tmp_path)).get(spec)

    def torch_alone() -> None:
        torch.export.load(io.BytesIO(artifact))

    benchmark.group = "kernel-library"
    ratio, cold_us, torch_us = benchmark.pedantic(
        lambda: interleaved_ratio(cold, torch_alone, rounds=15, calls=2), rounds=1
    )
    benchmark.extra_info.update(
        ratio=ratio,
        cold_ms=cold_us / 1e3,
        torch_export_load_ms=torch_us / 1e3,
        ours_ms=(cold_us - torch_us) / 1e3,
        target=2.5,
    )
    assert ratio <= 2.5


def test_load_from_s3_on_loopback(benchmark, s3_endpoint: str, s3_bucket: str) -> None:
    spec = spec_for("residual_mlp")
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    inline_library(store).lookup(spec)

    def cold() -> None:
        assert inline_library(store).lookup(spec).source == "store"

    benchmark.group = "kernel-library"
    benchmark.pedantic(cold, rounds=20, warmup_rounds=2)
    benchmark.extra_info.update(median_ms=benchmark.stats.stats.median * 1e3)


@pytest.mark.parametrize("name", ["residual_mlp", "low_rank", "conv_residual", "squeeze_excite"])
def test_compile_time(benchmark, name: str) -> None:
    spec = spec_for(name)
    compile_kernel(spec, (64,), 64)  # the first export in a process pays for imports
    benchmark.group = "compile"
    result = benchmark.pedantic(lambda: compile_kernel(spec, (64,), 64), rounds=3)
    benchmark.extra_info.update(
        compile_s=result.metadata.compile_s,
        shape=list(spec.input_shape),
        latency_us_p50=result.metadata.latency_us_p50,
    )
