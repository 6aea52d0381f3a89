"""`python -m esper.kernels list|tidy` against a local store and an S3 bucket."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest
import torch

from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore, S3Store
from esper.kernels.cli import main
from tests.integration.test_kernel_cli_errors import command


def fill(store, hidden_sizes=(8, 16)) -> list[str]:
    library = KernelLibrary(store, latency_batches=(4,), reference_batch=4, async_compile=False)
    ids = []
    for hidden in hidden_sizes:
        spec = KernelSpec(
            blueprint="residual_mlp",
            hparams={"hidden": hidden},
            input_shape=(6,),
            torch_version=torch.__version__,
        )
        ids.append(library.get(spec).metadata.kernel_id)
    return ids


def cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def test_module_entrypoint_lists_a_store(tmp_path: Path) -> None:
    fill(LocalStore(tmp_path / "k"), hidden_sizes=(8,))
    result = command("list", "--root", str(tmp_path / "k"))
    assert result.returncode == 0, result.stderr
    assert "1 kernel in" in result.stdout


@pytest.fixture(params=["local", "s3"])
def store_and_args(request, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "k"), ["--root", str(tmp_path / "k")]
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, endpoint_url=endpoint), ["--bucket", bucket, "--endpoint-url", endpoint]


def test_list_and_tidy(store_and_args) -> None:
    store, args = store_and_args
    ids = fill(store)
    listing = cli("list", *args)
    for kernel_id in ids:
        assert kernel_id[:12] in listing
    assert "residual_mlp" in listing and "[6]" in listing
    assert "2 kernels in" in listing and "0 quarantined" in listing

    store.quarantine(ids[0])
    assert "1 kernel in" in cli("list", *args) and "1 quarantined" in cli("list", *args)
    assert "would remove 1 quarantined" in cli("tidy", "--quarantined", "--dry-run", *args)
    assert "removed 1 quarantined" in cli("tidy", "--quarantined", *args)
    assert store.quarantined() == []

    assert "removed 0 kernels unused for 1 days" in cli("tidy", "--unused-days", "1", *args)
    time.sleep(1.1)
    assert "removed 1 kernels unused for 1e-05 days" in cli(
        "tidy", "--unused-days", "0.00001", *args
    )
    assert store.list() == []


def test_list_keeps_its_columns_in_line_for_long_blueprint_names(tmp_path: Path) -> None:
    """helper-found: a blueprint name longer than 16 characters pushed its row's other
    columns out of line with the header."""
    from esper import blueprints

    long_name = "a_users_adapter_with_a_long_name"
    blueprints.register_from_config(
        {
            long_name: {
                "_target_": "tests.blueprints_for_tests.scaled_adapter",
                "kinds": "vector",
                "width": 4,
            }
        }
    )
    store = LocalStore(tmp_path / "k")
    fill(store, hidden_sizes=(8,))
    KernelLibrary(store, latency_batches=(4,), reference_batch=4, async_compile=False).get(
        KernelSpec(blueprint=long_name, input_shape=(6,), torch_version=torch.__version__)
    )
    header, *rows, total = cli("list", "--root", str(tmp_path / "k")).splitlines()
    assert total.startswith("2 kernels in")
    assert sorted(row.split()[1] for row in rows) == sorted([long_name, "residual_mlp"])
    params_end = header.index("params") + len("params")
    for row in rows:  # left-aligned columns start in line, right-aligned ones end in line
        _, blueprint, shape = row.split()[:3]
        assert row.index(blueprint) == header.index("blueprint"), (header, row)
        assert row.index(shape, row.index(blueprint) + len(blueprint)) == header.index("shape")
        assert row[:params_end].split()[-1].isdigit() and row[params_end] == " ", (header, row)


def test_tidy_removes_objects_no_index_names_once_old(tmp_path: Path) -> None:
    """helper-found: a corrupt index is set aside and a fresh one started, and the objects
    only it named were never removed by any tidy. An orphan younger than an hour is kept (a
    run may be between writing and indexing it)."""
    import os

    root = tmp_path / "k"
    kept, orphan = fill(LocalStore(root))
    (root / "index.sqlite").write_bytes(b"not a database" * 100)
    LocalStore(root).take_notices()  # opening sets the corrupt index aside
    args = ("--root", str(root))
    assert "would remove 0 objects no index entry names, written over an hour ago" in cli(
        "tidy", "--unused-days", "0", "--dry-run", *args
    )
    fill(LocalStore(root), hidden_sizes=(8,))  # compiled again: indexed again
    old = time.time() - 3 * 86400
    objects = {p.stem: p for p in (root / "objects").glob("*/*.pt2")}
    for path in objects.values():
        os.utime(path, (old, old))
    said = cli("tidy", "--unused-days", "2", *args)
    assert "removed 1 objects no index entry names, written over 2 days ago" in said, said
    assert not objects[orphan].exists() and objects[kept].exists()
    assert [k.metadata.kernel_id for k in LocalStore(root).list()] == [kept]


def test_tidy_keeps_a_young_object_no_index_names_in_s3(s3_endpoint, s3_bucket) -> None:
    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    kept, orphan = fill(store)
    store.client.delete_object(
        Bucket=s3_bucket,
        Key=store._index_key(
            next(k.metadata.spec_key for k in store.list() if k.metadata.kernel_id == orphan)
        ),
    )
    args = ("--bucket", s3_bucket, "--endpoint-url", s3_endpoint)
    assert store.orphans(time.time() + 60) == [f"s3://{s3_bucket}/{store._object_key(orphan)}"]
    said = cli("tidy", "--unused-days", "0.5", *args)
    assert "removed 0 objects no index entry names, written over 0.5 days ago" in said, said
    store.remove_orphans(store.orphans(time.time() + 60))
    assert store.orphans(time.time() + 60) == []
    assert [k.metadata.kernel_id for k in store.list()] == [kept]
    assert store.get_artifact(kept)
