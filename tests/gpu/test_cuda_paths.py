"""The CUDA paths: a `trainer.device=cuda` run (kernels compiled on CUDA, their latency timed
with CUDA events in the training pass), the GNN policy's decision at 1,000 graph nodes on the
GPU (the earlier platform's controller took 4.24 ms on its GPU), a 1-GPU NCCL DDP run, and the
dormant/active overhead ratios on the GPU."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import esper
from tests.benchmarks.hosts import HOSTS
from tests.conftest import ROOT, own_env

pytestmark = pytest.mark.gpu

EARLY = (
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "trainer.max_epochs=10",
    "logger=none",
    "trainer.quiet=true",
)


def run(tmp_path: Path, device: torch.device, *args: str, torchrun: bool = False) -> dict:
    command = [sys.executable, str(ROOT / "run.py")]
    if torchrun:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            str(ROOT / "run.py"),
        ]
    result = subprocess.run(
        [
            *command,
            f"hydra.run.dir={tmp_path / 'run'}",
            f"trainer.device={device.type}",
            *EARLY,
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=own_env(ESPER_KERNEL_STORE=str(tmp_path / "kernels")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def test_a_cuda_run_compiles_and_times_kernels_on_the_gpu(tmp_path, device, figures) -> None:
    summary = run(tmp_path, device)
    assert summary["status"] == "completed" and summary["kernels"]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").open()]
    requested = [e for e in events if e["kind"] == "kernel_requested"]
    assert requested, "kernels were asked for"
    trained = [k for k in summary["kernels"] if k["train_latency_us_p50"] is not None]
    assert trained, "kernel latency measured in the training pass (CUDA events on a GPU)"
    epochs = [e["metrics"]["epoch_s"] for e in events if e["kind"] == "epoch_ended"]
    figures["cuda_run"] = {
        "test_accuracy": summary["metrics"]["test_accuracy"],
        "epoch_s_median": statistics.median(epochs),
        "kernels": {
            k["blueprint"]: {
                "compile_s": k["compile_s"],
                "latency_us_p50": k["latency_us_p50"],
                "train_latency_us_p50": k["train_latency_us_p50"],
            }
            for k in summary["kernels"]
        },
    }


def test_a_one_gpu_ddp_run(tmp_path, device, figures) -> None:
    summary = run(tmp_path, device, "trainer.strategy=ddp", torchrun=True)
    assert summary["status"] == "completed"
    assert summary["ranks"] is None or summary["ranks"]["adaptations_agree"]
    figures["ddp_one_gpu"] = {"status": summary["status"], "wall_s": summary["wall_s"]}


def test_the_gnn_decision_at_1000_nodes_on_the_gpu(device, figures) -> None:
    from esper.policy import GnnPolicy
    from tests.benchmarks.test_gnn_policy import example_input, host_for, observation

    host, sites = host_for(1_000)
    model = esper.wrap(host, sites, example_input())
    assert model.graph is not None
    model.graph.data = model.graph.data.to(device)
    policy = GnnPolicy(seed=0, scatter_backend="torch")
    policy.net.to(device)
    obs = observation(model)

    def decide() -> None:
        model.graph.update(obs, {}, {})
        policy.decide(obs.model_copy(update={"graph": model.graph}))
        if device.type == "cuda":
            torch.cuda.synchronize()

    ms = timed(decide, rounds=200) * 1e3
    figures["gnn_decision_ms_1000_nodes"] = {
        "median_ms": ms,
        "nodes": model.graph.num_nodes,
        "earlier_platform_ms": 4.24,
    }


@pytest.mark.parametrize("host_name", ["mlp_wide", "cnn", "transformer_tiny"])
def test_dormant_and_active_overhead_on_the_gpu(host_name, tmp_path, device, figures) -> None:
    from tests.benchmarks.test_active_overhead import HardCoded, grown

    spec = HOSTS[host_name]
    torch.manual_seed(0)
    host = spec.make().to(device)
    x, y = (t.to(device) for t in spec.inputs())
    wrapped = esper.wrap(copy.deepcopy(host), spec.sites, example_input=x[:2])
    dormant = ratio(step(wrapped, x, y, device), step(host, x, y, device))
    model, plain, seeds = grown(host_name, tmp_path)
    hard = HardCoded(copy.deepcopy(plain), seeds).to(device)
    active = ratio(step(model.to(device), x, y, device), step(hard, x, y, device))
    figures.setdefault("overhead", {})[host_name] = {"dormant": dormant, "active": active}


def step(model: torch.nn.Module, x, y, device: torch.device) -> Callable[[], None]:
    from esper.training.steps import token_loss

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one() -> None:
        optimizer.zero_grad(set_to_none=True)
        token_loss(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return one


def timed(fn: Callable[[], Any], rounds: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ratio(candidate: Callable[[], None], baseline: Callable[[], None], rounds: int = 31) -> float:
    """Median of candidate/baseline over rounds of 20 calls, alternating which goes first."""
    ratios = []
    for r in range(rounds):
        pair = (candidate, baseline) if r % 2 == 0 else (baseline, candidate)
        took = {}
        for fn in pair:
            took[fn] = timed(fn, rounds=20)
        ratios.append(took[candidate] / took[baseline])
    return statistics.median(ratios)
