"""The kernel library on S3, over HTTP against moto's server on 127.0.0.1."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import boto3
import pytest
import torch
from botocore.exceptions import ClientError

from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, S3Store, StoreUnavailableError, compile_kernel
from esper.kernels.compiler import load_artifact
from tests.conftest import run_cli
from tests.s3_support import FaultProxy, iter_keys, racing_put


def spec(hidden: int = 16) -> KernelSpec:
    return KernelSpec(
        blueprint="residual_mlp",
        hparams={"hidden": hidden},
        input_shape=(8,),
        torch_version=torch.__version__,
    )


def library(store: S3Store) -> KernelLibrary:
    return KernelLibrary(store, latency_batches=(8,), reference_batch=8, async_compile=False)


def test_put_get_list_round_trip(s3_endpoint: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, prefix="team/kernels", endpoint_url=s3_endpoint)
    first = library(store).get(spec())
    assert first.source == "compiled"
    again = library(S3Store(s3_bucket, prefix="team/kernels", endpoint_url=s3_endpoint)).get(spec())
    assert again.source == "store"
    assert again.metadata == first.metadata
    x = torch.randn(3, 8)
    assert torch.equal(again.module(x), first.module(x))
    (listed,) = store.list()
    assert listed.metadata.kernel_id == first.metadata.kernel_id
    assert listed.size == first.metadata.artifact_bytes
    keys = set(iter_keys(s3_endpoint, s3_bucket))
    assert f"team/kernels/objects/{first.metadata.kernel_id}.pt2" in keys
    assert f"team/kernels/index/{first.metadata.spec_key}.json" in keys
    found = library(store).kernels_for("residual_mlp", (8,), "cpu")
    assert [m.kernel_id for m in found] == [first.metadata.kernel_id]


def test_two_processes_writing_the_same_kernel_leave_one_valid_object(
    s3_endpoint: str, s3_bucket: str
) -> None:
    compiled = compile_kernel(spec(), (8,), 8)
    args = (s3_endpoint, s3_bucket, compiled.metadata.model_dump_json(), compiled.artifact, 5)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        wins = pool.starmap(racing_put, [args, args])
    assert sum(wins) == 1, "exactly one writer indexes the spec"
    keys = sorted(iter_keys(s3_endpoint, s3_bucket))
    assert keys == sorted(
        [
            f"esper/kernels/objects/{compiled.metadata.kernel_id}.pt2",
            f"esper/kernels/index/{compiled.metadata.spec_key}.json",
        ]
    )
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    load_artifact(store.get_artifact(compiled.metadata.kernel_id), compiled.metadata.kernel_id)
    assert library(store).get(spec()).source == "store"


def test_corrupted_object_is_quarantined_and_compiled_again(s3_endpoint, s3_bucket) -> None:
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    original = library(store).get(spec()).metadata
    key = f"esper/kernels/objects/{original.kernel_id}.pt2"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    good = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=key, Body=good[: len(good) // 2])

    fresh = library(S3Store(s3_bucket, endpoint_url=s3_endpoint))
    again = fresh.get(spec())
    assert again.source == "compiled"
    assert fresh.counts.quarantined == [original.kernel_id]
    (notice,) = fresh.drain_quarantines()
    assert "tampered" in notice.error and notice.location.startswith(f"s3://{s3_bucket}/")
    assert len(store.quarantined()) == 1
    restored = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert restored == good


def test_corrupted_metadata_is_quarantined(s3_endpoint, s3_bucket, caplog) -> None:
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    original = library(store).get(spec()).metadata
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.put_object(
        Bucket=s3_bucket, Key=f"esper/kernels/index/{original.spec_key}.json", Body=b"{not json"
    )
    fresh = library(S3Store(s3_bucket, endpoint_url=s3_endpoint))
    assert fresh.get(spec()).source == "compiled"
    assert "not valid metadata" in fresh.drain_quarantines()[0].error
    # said on the console as the local store says it (adversarial case B32: events only)
    (said,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said.startswith(f"index entry {original.spec_key[:16]} in s3://{s3_bucket}")
    assert "quarantined to s3://" in said


def test_missing_bucket_and_wrong_endpoint_are_named(s3_endpoint: str) -> None:
    with pytest.raises(StoreUnavailableError) as missing:
        S3Store("no-such-bucket", endpoint_url=s3_endpoint)
    assert str(missing.value) == (
        f"storage.bucket='no-such-bucket' at storage.endpoint_url={s3_endpoint}: "
        "the bucket does not exist"
    )
    with pytest.raises(
        StoreUnavailableError, match=r"storage.endpoint_url=http://127.0.0.1:9/?: cannot connect"
    ):
        S3Store("any-bucket", endpoint_url="http://127.0.0.1:9", max_attempts=1)


def test_retries_injected_503_answers_with_backoff(s3_endpoint: str, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_endpoint)
    try:
        store = S3Store(s3_bucket, endpoint_url=proxy.url, max_attempts=4)
        compiled = compile_kernel(spec(), (8,), 8)
        store.put(compiled.metadata, compiled.artifact)
        object_path = f"objects/{compiled.metadata.kernel_id}"
        before = proxy.count(object_path)
        proxy.fail_next(3, status=503, code="SlowDown", path=object_path)
        assert store.get_artifact(compiled.metadata.kernel_id) == compiled.artifact
        assert proxy.count(object_path) - before == 4, "three 503s, then the answer"

        impatient = S3Store(s3_bucket, endpoint_url=proxy.url, max_attempts=2)
        proxy.fail_next(2, status=500, code="InternalError", path=object_path)
        with pytest.raises(ClientError, match="InternalError"):
            impatient.get_artifact(compiled.metadata.kernel_id)
    finally:
        proxy.close()


def test_access_denied_is_named(s3_endpoint: str, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_endpoint)
    try:
        proxy.fail_next(1, status=403, code="AccessDenied", path=s3_bucket)
        with pytest.raises(
            StoreUnavailableError, match=f"storage.bucket='{s3_bucket}'.*access denied"
        ):
            S3Store(s3_bucket, endpoint_url=proxy.url)
    finally:
        proxy.close()


@pytest.mark.slow
def test_two_runs_share_kernels_through_s3(s3_endpoint, s3_bucket, tmp_path: Path) -> None:
    env = {
        "ESPER_S3_ENDPOINT_URL": s3_endpoint,
        "ESPER_S3_BUCKET": s3_bucket,
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    summaries = []
    for name in ("first", "second"):
        result = run_cli(
            "storage=s3",
            "logger=none",
            "trainer.progress=false",
            "kernels.preflight=false",  # the first run compiles while it trains
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    first, second = summaries
    assert first["choices"]["storage"] == "s3" and first["kernels"]
    assert first["kernels"][0]["source"] == "compiled"
    assert {k["source"] for k in second["kernels"]} <= {"memory", "store"}
    assert second["kernel_library"]["compiles"] == 0
    assert second["kernel_library"]["store"].startswith(f"s3://{s3_bucket}/esper/kernels")


@pytest.mark.slow
def test_run_with_missing_bucket_fails_before_training(s3_endpoint, tmp_path: Path) -> None:
    result = run_cli(
        "storage=s3",
        "storage.bucket=not-there",
        f"storage.endpoint_url={s3_endpoint}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    )
    assert result.returncode == 2
    assert (
        f"storage: storage.bucket='not-there' at storage.endpoint_url={s3_endpoint}"
        in result.stderr
    )
    assert not (tmp_path / "run" / "events.jsonl").exists()
