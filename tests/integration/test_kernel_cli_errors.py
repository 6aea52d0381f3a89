"""The kernel CLI's errors are one line and exit 2; a damaged local index is set aside and the
store goes on (kernels it forgot are compiled again); `tidy --repair` does it on request."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from esper.kernels import KernelLibrary, LocalStore
from esper.kernels.cli import main
from tests.conftest import ROOT
from tests.unit.test_safe_loading import kernel_spec


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m esper.kernels ARGS`, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "esper.kernels", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=120,
    )


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def library(root: Path) -> KernelLibrary:
    return KernelLibrary(
        LocalStore(root), latency_batches=(2,), reference_batch=2, async_compile=False
    )


def filled(root: Path) -> str:
    return library(root).get(kernel_spec()).metadata.kernel_id


def test_list_of_a_missing_directory_is_an_error_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    one_line_error(*run(capsys, "list", "--root", str(missing))[::2], str(missing))
    assert not missing.exists()


def test_list_of_a_directory_that_is_no_store_leaves_it_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    one_line_error(*run(capsys, "list", "--root", str(tmp_path))[::2], "not a kernel store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_list_of_a_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    one_line_error(*run(capsys, "list", "--root", str(path))[::2], str(path))


@pytest.mark.parametrize("days", ["-1", "nan", "-0.5", "abc"])
def test_unused_days_must_be_a_number_at_least_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, days: str
) -> None:
    filled(tmp_path)
    one_line_error(
        *run(capsys, "tidy", "--unused-days", days, "--root", str(tmp_path))[::2], "--unused-days"
    )
    assert len(LocalStore(tmp_path).list()) == 1


def test_tidy_without_an_action_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    filled(tmp_path)
    one_line_error(*run(capsys, "tidy", "--root", str(tmp_path))[::2], "--repair")


def test_missing_bucket_is_one_line(capsys: pytest.CaptureFixture[str], s3_endpoint: str) -> None:
    code, _, err = run(capsys, "list", "--bucket", "no-such-bucket", "--endpoint-url", s3_endpoint)
    one_line_error(code, err, "no-such-bucket", "does not exist")


def test_the_module_entrypoint_prints_no_traceback(tmp_path: Path) -> None:
    result = command("list", "--root", str(tmp_path / "none"))
    one_line_error(result.returncode, result.stderr, "none")


# -- a damaged index -----------------------------------------------------------------------
def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1500])


@pytest.mark.parametrize("damage", [_random_bytes, _truncated], ids=["random", "truncated"])
def test_a_corrupt_index_is_set_aside_and_kernels_compile_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage
) -> None:
    kernel_id = filled(tmp_path)
    library(tmp_path).get(kernel_spec("low_rank"))
    damage(tmp_path / "index.sqlite")
    with caplog.at_level(logging.WARNING):
        again = library(tmp_path)
        loaded = again.get(kernel_spec())
    assert "index.sqlite" in caplog.text and "quarantine" in caplog.text
    assert loaded.source == "compiled" and loaded.metadata.kernel_id == kernel_id
    (notice,) = again.drain_quarantines()
    assert "index.sqlite" in notice.error
    assert any("index.sqlite" in q for q in LocalStore(tmp_path).quarantined())
    assert library(tmp_path).get(kernel_spec()).source == "store"


def _set_metadata(root: Path, text: str) -> None:
    with sqlite3.connect(root / "index.sqlite") as db:
        db.execute("UPDATE kernels SET metadata = ?", (text,))


@pytest.mark.parametrize(
    "metadata", ['{"kernel_id": 1}', "not json", "{}"], ids=["fields", "json", "empty"]
)
def test_a_malformed_index_row_is_quarantined_and_the_kernel_compiled_again(
    tmp_path: Path, metadata: str
) -> None:
    kernel_id = filled(tmp_path)
    _set_metadata(tmp_path, metadata)
    again = library(tmp_path)
    loaded = again.get(kernel_spec())
    assert loaded.source == "compiled" and loaded.metadata.kernel_id == kernel_id
    (notice,) = again.drain_quarantines()
    assert "index row" in notice.error
    assert library(tmp_path).get(kernel_spec()).source == "store"


def test_an_index_row_naming_another_specs_kernel_is_refused(tmp_path: Path) -> None:
    """A writer pointing spec A at (valid) kernel B gets a recompile, not kernel B."""
    lib = library(tmp_path)
    wanted = lib.get(kernel_spec()).metadata
    other = lib.get(kernel_spec("low_rank")).metadata
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("DELETE FROM kernels WHERE kernel_id = ?", (wanted.kernel_id,))
        db.execute("UPDATE kernels SET spec_key = ?", (wanted.spec_key,))
    again = library(tmp_path)
    loaded = again.get(kernel_spec())
    assert loaded.source == "compiled" and loaded.metadata.kernel_id == wanted.kernel_id
    assert other.kernel_id != wanted.kernel_id


def test_list_skips_a_malformed_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    lib = library(tmp_path)
    lib.get(kernel_spec())
    lib.get(kernel_spec("low_rank"))
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("UPDATE kernels SET metadata = 'garbage' WHERE blueprint = 'low_rank'")
    code, out, err = run(capsys, "list", "--root", str(tmp_path))
    assert code == 0, err
    assert "1 kernel in" in out and "residual_mlp" in out
    assert "malformed" in err and "tidy --repair" in err


def test_tidy_repair_fixes_rows_and_a_corrupt_index(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lib = library(tmp_path)
    kept = lib.get(kernel_spec()).metadata
    gone = lib.get(kernel_spec("low_rank")).metadata
    bad = lib.get(kernel_spec("residual_mlp", (6,))).metadata
    obj = tmp_path / "objects" / gone.kernel_id[:2] / f"{gone.kernel_id}.pt2"
    obj.unlink()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("UPDATE kernels SET metadata = '{' WHERE kernel_id = ?", (bad.kernel_id,))
    code, out, err = run(capsys, "tidy", "--repair", "--root", str(tmp_path))
    assert code == 0, err
    assert "1 malformed index rows quarantined" in out
    assert "1 index rows without an artifact dropped" in out
    assert [k.metadata.kernel_id for k in LocalStore(tmp_path).list()] == [kept.kernel_id]

    _random_bytes(tmp_path / "index.sqlite")
    code, out, err = run(capsys, "tidy", "--repair", "--root", str(tmp_path))
    assert code == 0, err
    assert "index.sqlite" in out and "quarantine" in out
    code, out, err = run(capsys, "tidy", "--repair", "--root", str(tmp_path))
    assert code == 0 and "index is sound" in out, out + err


def test_an_index_id_that_is_a_path_touches_no_file_outside_the_store(tmp_path: Path) -> None:
    """Ids become file names: a row whose kernel id climbs out of objects/ is refused before
    any file is read, moved or removed."""
    root = tmp_path / "store"
    victim = tmp_path / "victim.pt2"
    victim.write_bytes(b"someone else's file")
    kernel_id = filled(root)
    with sqlite3.connect(root / "index.sqlite") as db:
        text = db.execute("SELECT metadata FROM kernels").fetchone()[0]
        evil = text.replace(kernel_id, "../../victim")
        db.execute("UPDATE kernels SET kernel_id = '../../victim', metadata = ?", (evil,))
    again = library(root)
    assert again.get(kernel_spec()).source == "compiled"
    assert victim.read_bytes() == b"someone else's file"
    LocalStore(root).repair()
    assert victim.exists()


def test_s3_index_entry_naming_another_spec_is_quarantined_and_repair_cleans_up(
    capsys: pytest.CaptureFixture[str], s3_endpoint: str, s3_bucket: str
) -> None:
    from esper.kernels import S3Store

    store = S3Store(s3_bucket, endpoint_url=s3_endpoint)
    lib = KernelLibrary(store, latency_batches=(2,), reference_batch=2, async_compile=False)
    wanted = lib.get(kernel_spec()).metadata
    other = lib.get(kernel_spec("low_rank")).metadata
    index = f"esper/kernels/index/{wanted.spec_key}.json"
    store.client.put_object(Bucket=s3_bucket, Key=index, Body=other.model_dump_json().encode())
    again = KernelLibrary(store, latency_batches=(2,), reference_batch=2, async_compile=False)
    loaded = again.get(kernel_spec())
    assert loaded.source == "compiled" and loaded.metadata.kernel_id == wanted.kernel_id
    (notice,) = again.drain_quarantines()
    assert "another spec" in notice.error

    args = ["--bucket", s3_bucket, "--endpoint-url", s3_endpoint]
    store.client.put_object(Bucket=s3_bucket, Key=index, Body=b"{")
    store.client.delete_object(Bucket=s3_bucket, Key=f"esper/kernels/objects/{other.kernel_id}.pt2")
    code, out, err = run(capsys, "list", *args)
    assert code == 0 and "1 kernel in" in out and "tidy --repair" in err, out + err
    code, out, err = run(capsys, "tidy", "--repair", *args)
    assert code == 0, err
    assert "1 malformed index rows quarantined" in out
    assert "1 index rows without an artifact dropped" in out
    assert run(capsys, "tidy", "--repair", *args)[1].startswith("index is sound: 0 entries")


@pytest.mark.parametrize("flag", ["--root", "--bucket"])
def test_an_empty_store_name_is_refused_not_taken_for_the_default_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    """helper-found: `tidy --bucket "$B"` with B unset acted on ~/.cache/esper/kernels."""
    default = tmp_path / "default"
    kept = filled(default)
    monkeypatch.setenv("ESPER_KERNEL_STORE", str(default))
    code, _, err = run(capsys, "tidy", flag, "", "--unused-days", "0")
    one_line_error(code, err, f"{flag} is empty")
    assert [k.metadata.kernel_id for k in LocalStore(default).list()] == [kept]
    code, out, err = run(capsys, "tidy", "--unused-days", "0", "--dry-run")
    assert code == 0, err
    assert out.strip().startswith("would remove 1 kernels") and str(default) in out, out


@pytest.mark.parametrize("last_used", [1e20, "'abc'", "-1"])
def test_an_index_row_whose_last_use_is_no_time_is_skipped_then_repaired(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, last_used: object
) -> None:
    """helper-found: such a row passed `tidy --repair`; then `list` failed (`timestamp out of
    range for platform time_t`) and `tidy` too (`'<' not supported between str and float`)."""
    lib = library(tmp_path)
    kept = lib.get(kernel_spec()).metadata
    bad = lib.get(kernel_spec("low_rank")).metadata
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute(
            f"UPDATE kernels SET last_used = {last_used} WHERE kernel_id = ?", (bad.kernel_id,)
        )
    code, out, err = run(capsys, "list", "--root", str(tmp_path))
    assert code == 0 and "1 kernel in" in out and "tidy --repair" in err, out + err
    code, out, err = run(capsys, "tidy", "--unused-days", "1", "--root", str(tmp_path))
    assert code == 0 and "removed 0 kernels" in out, out + err
    code, out, err = run(capsys, "tidy", "--repair", "--root", str(tmp_path))
    assert code == 0 and "1 malformed index rows quarantined" in out, out + err
    assert [k.metadata.kernel_id for k in LocalStore(tmp_path).list()] == [kept.kernel_id]


def test_a_corrupt_index_is_said_once_by_the_command(tmp_path: Path) -> None:
    """helper-found: the note came twice, once bare from logging's last resort."""
    filled(tmp_path)
    _random_bytes(tmp_path / "index.sqlite")
    result = command("list", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (said,) = result.stderr.strip().splitlines()
    assert said.startswith("python -m esper.kernels: note: kernel index ") and "corrupt" in said
