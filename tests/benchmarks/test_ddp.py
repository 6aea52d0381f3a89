"""DDP costs under a real torchrun (gloo, this CPU): the decision broadcast per control step
(target <= 1 ms at 2 ranks), and the epoch time of a 2-rank run over a 1-rank run of the same
experiment (reported as a ratio: on 2 shared cores the ranks compete for the same cores)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, own_env

TARGET_US = 1000


def torchrun(tmp_path: Path, ranks: int, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels"), OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_decision_broadcast_at_two_ranks(tmp_path: Path) -> None:
    out = tmp_path / "broadcast.json"
    torchrun(tmp_path, 2, str(ROOT / "tests" / "benchmarks" / "ddp_probe.py"), str(out))
    median_us = json.loads(out.read_text())["median_us"]
    print(f"\ndecision broadcast, 2 ranks (gloo): {median_us:.0f} us median")
    assert median_us <= TARGET_US


def epoch_s(tmp_path: Path, ranks: int) -> float:
    run_dir = tmp_path / f"ranks{ranks}"
    torchrun(
        tmp_path,
        ranks,
        str(ROOT / "run.py"),
        f"hydra.run.dir={run_dir}",
        "trainer.strategy=ddp",
        "dataset=digits",
        "model.hidden=[64,64]",
        "trainer.max_epochs=12",
        "policy=none",
        "logger=none",
        "trainer.quiet=true",
    )
    events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
    return statistics.median(e["metrics"]["epoch_s"] for e in events if e["kind"] == "epoch_ended")


def test_two_ranks_over_one_epoch_time(tmp_path: Path) -> None:
    one, two = epoch_s(tmp_path, 1), epoch_s(tmp_path, 2)
    print(
        f"\ndigits MLP [64,64] epoch: 1 rank {one * 1e3:.1f} ms, 2 ranks {two * 1e3:.1f} ms, "
        f"ratio {two / one:.2f}"
    )
