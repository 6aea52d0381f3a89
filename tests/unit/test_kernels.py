"""Export, validate, characterise, store, load: the kernel path with real files and real SQLite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from esper.blueprints import build
from esper.contracts import KernelSpec
from esper.kernels import (
    KernelIntegrityError,
    KernelLibrary,
    LocalStore,
    compile_kernel,
    load_artifact,
)
from esper.kernels.compiler import instantiate, sha256


def spec(blueprint: str = "residual_mlp", shape=(8,), **hparams) -> KernelSpec:
    return KernelSpec(
        blueprint=blueprint,
        hparams=hparams or {"hidden": 16},
        input_shape=shape,
        torch_version=torch.__version__,
    )


def test_compiled_kernel_matches_eager_at_any_batch_and_is_characterised() -> None:
    compiled = compile_kernel(spec(), (4, 16), reference_batch=16)
    meta = compiled.metadata
    assert meta.kernel_id == sha256(compiled.artifact)
    assert meta.param_count == 8 * 16 + 16 + 16 * 8 + 8
    assert 0 < meta.latency_us_p50 <= meta.latency_us_p95
    assert meta.compile_s > 0 and meta.artifact_bytes == len(compiled.artifact)
    eager = build("residual_mlp", (8,), {"hidden": 16}, seed=0)
    loaded = instantiate(compiled.program)
    for batch in (1, 3, 100):
        x = torch.randn(batch, 8)
        torch.testing.assert_close(loaded(x), eager(x))


def test_same_spec_gives_the_same_kernel_id() -> None:
    assert compile_kernel(spec()).metadata.kernel_id == compile_kernel(spec()).metadata.kernel_id


def test_loaded_kernel_is_trainable_and_independent_of_the_cache() -> None:
    compiled = compile_kernel(spec())
    a, b = instantiate(compiled.program), instantiate(compiled.program)
    assert all(p.requires_grad for p in a.parameters())
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    x = torch.randn(4, 8)
    (a(x) - 1).square().sum().backward()
    opt.step()
    assert not torch.equal(a(x), b(x)), "training one instance must not move another"


def test_round_trip_through_the_store(tmp_path: Path) -> None:
    first = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    compiled = first.get(spec())
    assert compiled.source == "compiled"
    assert first.get(spec()).source == "memory"

    second = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    loaded = second.get(spec())
    assert loaded.source == "store"
    assert loaded.metadata == compiled.metadata
    x = torch.randn(5, 8)
    assert torch.equal(loaded.module(x), compiled.module(x))
    assert [k.metadata.kernel_id for k in LocalStore(tmp_path).list()] == [
        compiled.metadata.kernel_id
    ]


def test_a_claim_won_after_another_job_stored_the_kernel_loads_it(tmp_path: Path) -> None:
    """The race a 4-job S3 sweep hit (4 compiles of 3 kernels): job B misses the store, job A
    compiles, stores and releases its claim, then B wins the claim. B must load A's kernel,
    not compile it again. `compile_once` is B's path after its miss."""
    first, second = (
        KernelLibrary(
            LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
        )
        for _ in range(2)
    )
    compiled = first.get(spec())
    loaded = second.compile_once(spec())
    assert loaded.source == "store" and loaded.metadata == compiled.metadata
    assert (first.counts.compiles, second.counts.compiles) == (1, 0)
    assert LocalStore(tmp_path).claim(spec().key()), "the claim was released"


def test_tampered_artifact_is_rejected_with_a_clear_error() -> None:
    compiled = compile_kernel(spec())
    tampered = bytearray(compiled.artifact)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(KernelIntegrityError, match="corrupted or was tampered with"):
        load_artifact(bytes(tampered), compiled.metadata.kernel_id)


def test_library_quarantines_a_corrupted_object_and_compiles_again(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    original = (
        KernelLibrary(store, latency_batches=(8,), reference_batch=8, async_compile=False)
        .get(spec())
        .metadata
    )
    obj = tmp_path / "objects" / original.kernel_id[:2] / f"{original.kernel_id}.pt2"
    obj.write_bytes(obj.read_bytes()[:-100])  # truncated
    fresh = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    again = fresh.get(spec())
    assert again.source == "compiled"
    assert again.metadata.kernel_id == original.kernel_id
    assert fresh.counts.quarantined == [original.kernel_id]
    assert len(list((tmp_path / "quarantine").iterdir())) == 1
    assert obj.read_bytes() and load_artifact(obj.read_bytes(), original.kernel_id)


def test_unusable_store_root_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="storage.root="):
        LocalStore(blocker / "sub")


def test_characterisation_covers_each_batch_forward_and_backward() -> None:
    meta = compile_kernel(spec(), (1, 4, 16), reference_batch=4).metadata
    assert [p.batch for p in meta.characterisation] == [1, 4, 16]
    for point in meta.characterisation:
        assert 0 < point.forward_us_p50 <= point.forward_us_p95
        assert 0 < point.forward_backward_us_p50 <= point.forward_backward_us_p95
    reference = meta.characterisation[1]
    assert (meta.latency_batch, meta.latency_us_p50) == (4, reference.forward_us_p50)


def test_library_finds_kernels_by_blueprint_shape_and_device(tmp_path: Path) -> None:
    library = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(4,), reference_batch=4, async_compile=False
    )
    made = library.get(spec()).metadata
    library.get(spec("low_rank", rank=2))
    assert [m.kernel_id for m in library.kernels_for("residual_mlp", (8,), "cpu")] == [
        made.kernel_id
    ]
    assert library.kernels_for("residual_mlp", (9,), "cpu") == []
    assert library.kernels_for("residual_mlp", (8,), "cuda") == []


def test_artifacts_carry_no_source_paths_so_every_checkout_hashes_alike() -> None:
    import io
    import zipfile

    import esper

    checkout = str(Path(esper.__file__).resolve().parent.parent).encode()
    artifact = compile_kernel(spec("attention", shape=(6, 8), heads=2, causal=True)).artifact
    archive = zipfile.ZipFile(io.BytesIO(artifact))
    assert not [n for n in archive.namelist() if checkout in archive.read(n)]


def test_one_artifact_serves_every_spec_that_builds_it(tmp_path: Path) -> None:
    """helper-found: a builder whose file changed without changing its graph (a comment)
    exported the same bytes under a new spec key; the index held one row per artifact, so the
    new key was never indexed and the kernel compiled again in every later run."""
    library = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    before, after = spec().model_copy(update={"code": "a"}), spec().model_copy(update={"code": "b"})
    first, second = library.get(before), library.get(after)
    assert (first.source, second.source) == ("compiled", "compiled")
    assert first.metadata.kernel_id == second.metadata.kernel_id, "the same bytes"
    again = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    assert (again.get(before).source, again.get(after).source) == ("store", "store")
    assert sorted(k.metadata.spec_key for k in LocalStore(tmp_path).list()) == sorted(
        [before.key(), after.key()]
    )


def test_an_index_keyed_by_kernel_id_is_rewritten_with_its_rows(tmp_path: Path) -> None:
    """A store indexed before rows were keyed by spec keeps its kernels."""
    import sqlite3

    compiled = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    ).get(spec())
    with sqlite3.connect(tmp_path / "index.sqlite") as db:  # as stores wrote it until 2026-12
        rows = db.execute("SELECT * FROM kernels").fetchall()
        db.executescript(
            "DROP TABLE kernels; CREATE TABLE kernels (kernel_id TEXT PRIMARY KEY, spec_key TEXT "
            "NOT NULL, blueprint TEXT NOT NULL, metadata TEXT NOT NULL, size INTEGER NOT NULL, "
            "created_at REAL NOT NULL, last_used REAL NOT NULL); CREATE UNIQUE INDEX "
            "kernels_spec_key ON kernels (spec_key);"
        )
        db.executemany("INSERT INTO kernels VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    library = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    assert library.get(spec()).metadata == compiled.metadata
    other = spec().model_copy(update={"code": "changed"})
    assert library.get(other).source == "compiled"
    assert len(LocalStore(tmp_path).list()) == 2, "the same artifact, now under two specs"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"scale": 3.0}, r"computes otherwise than blueprint 'file_set' builds now \(by "),
        (
            {"width": 6},
            r"the store's kernel has other parameters than blueprint 'file_set' builds now "
            r"\(down.bias \[4\] -> \[6\], down.weight \[4, 8\] -> \[6, 8\], up.weight",
        ),
        ({"offset": 0.5}, r"starts from other weights than blueprint 'file_set' builds now"),
    ],
    ids=["output", "parameters", "initial-weights"],
)
def test_a_stored_kernel_unlike_what_its_builder_builds_now_is_compiled_again(
    tmp_path: Path, change: dict, said: str
) -> None:
    """helper-found: the kernel key digests a builder's source and the modules it imports, not
    a file it reads; a run whose builder read another file was handed the old kernel from the
    store. Each store load now checks the kernel against a fresh eager build."""
    import json

    from esper import blueprints
    from esper.kernels.compiler import check_against_builder

    blueprints.register_from_config(
        {
            "file_set": {
                "_target_": "tests.blueprints_for_tests.file_set_adapter",
                "kinds": "vector",
                "settings": "",
            }
        }
    )
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"width": 4, "scale": 1.0, "offset": 0.0}))
    wanted = KernelSpec(
        blueprint="file_set",
        hparams={"settings": str(settings)},
        input_shape=(8,),
        torch_version=torch.__version__,
    )

    def library() -> KernelLibrary:
        return KernelLibrary(
            LocalStore(tmp_path / "store"),
            latency_batches=(8,),
            reference_batch=8,
            async_compile=False,
        )

    first = library().get(wanted)
    settings.write_text(json.dumps({"width": 4, "scale": 1.0, "offset": 0.0} | change))
    checked = library()
    again = checked.get(wanted)
    assert again.source == "compiled"
    assert again.metadata.kernel_id != first.metadata.kernel_id
    (notice,) = checked.drain_quarantines()
    assert notice.kernel_id == first.metadata.kernel_id
    assert re.search(said, notice.error), notice.error
    assert "code its key cannot see changed" in notice.error
    assert len(list((tmp_path / "store" / "quarantine").iterdir())) == 1
    check_against_builder(
        wanted,
        load_artifact(
            (
                tmp_path
                / "store"
                / "objects"
                / again.metadata.kernel_id[:2]
                / f"{again.metadata.kernel_id}.pt2"
            ).read_bytes(),
            again.metadata.kernel_id,
        ),
    )
    third = library()
    assert third.get(wanted).source == "store", "the new kernel is kept"
    assert third.drain_quarantines() == []


def test_a_module_that_cannot_be_deep_copied_loads_from_the_store_as_it_compiled(
    tmp_path: Path,
) -> None:
    """helper-found: the check of a stored kernel deep-copied a fresh build, which the old
    `weight_norm` (a computed `weight`) refuses: every seed of a warm run was culled."""
    from esper import blueprints

    blueprints.register_from_config(
        {"old_wn": {"_target_": "tests.blueprints_for_tests.old_weight_norm", "kinds": "vector"}}
    )
    wanted = KernelSpec(blueprint="old_wn", input_shape=(8,), torch_version=torch.__version__)

    def library() -> KernelLibrary:
        return KernelLibrary(
            LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
        )

    assert library().get(wanted).source == "compiled"
    warm = library()
    assert warm.get(wanted).source == "store"
    assert warm.drain_quarantines() == []


def test_the_module_a_store_load_checked_is_the_first_seeds_with_the_stored_weights(
    tmp_path: Path,
) -> None:
    """The check of a stored kernel instantiates it and tries trained weights in it; that
    module, its stored weights back, is the first seed's (a load instantiates once), and every
    later seed gets its own."""
    library = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    expected = library.get(spec()).module.state_dict()
    warm = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    first, second = warm.get(spec()), warm.get(spec())
    assert (first.source, second.source) == ("store", "memory")
    assert first.module is not second.module
    for module in (first.module, second.module):
        state = module.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        assert all(p.requires_grad for p in module.parameters())
