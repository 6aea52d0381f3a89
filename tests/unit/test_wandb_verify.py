"""The W&B sink reads its run file back after `finish()` (W&B's service does not tell its
client of a failed write). Found by CI on a loaded machine: `finish()` had returned before the
service wrote the file out, so a whole run was reported `incomplete (0 of 9 rows, no exit
record): disk full?`, and a test then read a torn last record. A file not yet whole is read
again for a few seconds before it counts as a failure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest


def test_a_run_file_still_being_written_out_is_waited_for(tmp_path: Path) -> None:
    import wandb

    from esper.events.wandb_sink import WandbSink

    sink = WandbSink(tmp_path, {"seed": 0}, silent=True)
    sink.run.finish()
    wandb.teardown()
    sink.verify(wait_s=0)  # whole: its exit record is there
    path = Path(sink.run_dir) / f"run-{sink.run_id}.wandb"
    whole = path.read_bytes()
    half = whole[: len(whole) // 2]  # as the service had left it when finish() returned
    path.write_bytes(half)
    later = threading.Timer(0.5, path.write_bytes, args=(whole,))
    later.start()
    sink.verify(wait_s=10)
    later.join()
    path.write_bytes(half)
    with pytest.raises(OSError, match=r"is incomplete \(0 of 0 rows, no exit record\)|unreadable"):
        sink.verify(wait_s=0.3)  # never written out: the sink's failure, as before
