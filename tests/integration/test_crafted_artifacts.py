"""A kernel planted in a shared store (local directory or S3 bucket over HTTP to moto) with its
index entry rewritten to the planted artifact's hash passes the SHA-256 check by construction.
It must still be refused, quarantined with the reason, never executed, and compiled again."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.contracts import KernelMetadata
from esper.kernels import KernelLibrary, LocalStore, S3Store
from esper.kernels.compiler import sha256
from tests.unit.test_safe_loading import craft, kernel_spec


def _library(store) -> KernelLibrary:
    return KernelLibrary(store, latency_batches=(2,), reference_batch=2, async_compile=False)


def plant(store, kind: str, marker: Path) -> tuple[KernelMetadata, KernelMetadata]:
    """Compile the real kernel, then replace object and index entry with a crafted one."""
    spec = kernel_spec()
    original = _library(store).get(spec).metadata
    real = store.get_artifact(original.kernel_id)
    crafted = craft(real, kind, marker)
    planted = original.model_copy(
        update={"kernel_id": sha256(crafted), "artifact_bytes": len(crafted)}
    )
    store.remove(original.kernel_id)
    assert store.put(planted, crafted)
    assert store.find(spec.key()) == planted
    return original, planted


def check_refused(store, kind: str, marker: Path) -> None:
    original, planted = plant(store, kind, marker)
    library = _library(store)
    loaded = library.get(kernel_spec())
    assert not marker.exists(), f"{kind}: the planted payload ran"
    assert loaded.source == "compiled"
    assert loaded.metadata.kernel_id == original.kernel_id
    assert library.counts.quarantined == [planted.kernel_id]
    (notice,) = library.drain_quarantines()
    assert "refused" in notice.error and planted.kernel_id[:16] in notice.error
    assert len(store.quarantined()) == 1
    assert store.find(kernel_spec().key()).kernel_id == original.kernel_id
    assert _library(store).get(kernel_spec()).source == "store"


LOCAL_KINDS = (
    "pickled_weight",
    "pickled_sample_inputs",
    "opaque_constant",
    "sympy_expression",
    "guards_code",
    "aot_inductor_member",
)


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_planted_kernel_in_a_local_store_is_quarantined_not_run(tmp_path: Path, kind: str) -> None:
    check_refused(LocalStore(tmp_path / "store"), kind, tmp_path / "marker")


@pytest.mark.parametrize("kind", ["pickled_weight", "pickled_sample_inputs", "guards_code"])
def test_planted_kernel_in_an_s3_bucket_is_quarantined_not_run(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, kind: str
) -> None:
    check_refused(S3Store(s3_bucket, endpoint_url=s3_endpoint), kind, tmp_path / "marker")
