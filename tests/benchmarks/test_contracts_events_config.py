"""DESIGN.md targets for the plumbing: publishing an event on the hot path <= 5 us, contract
serialisation >= 100k messages/s, config compose <= 100 ms."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir

from esper.contracts import Adaptation, KernelMetadata, KernelSpec, SeedState
from esper.events import EventBus
from tests.conftest import CONF


def adaptation() -> Adaptation:
    return Adaptation(
        epoch=3,
        step=120,
        slot="blocks.0",
        blueprint="residual_mlp",
        from_state=SeedState.TRAINING,
        to_state=SeedState.BLENDING,
        reason="incubated 3 epochs",
    )


def test_publish_an_event(benchmark) -> None:
    bus = EventBus([])

    def publish() -> None:
        bus.publish(adaptation())
        if len(bus._pending) > 10_000:
            bus._pending.clear()

    benchmark.group = "plumbing"
    benchmark(publish)
    median_us = benchmark.stats.stats.median * 1e6
    benchmark.extra_info.update(median_us=median_us, target_us=5)
    print(f"\nbuild + publish one event: {median_us:.2f} us")
    assert median_us <= 5


def test_contract_serialisation_rate(benchmark) -> None:
    event = adaptation()
    meta = KernelMetadata(
        kernel_id="a" * 64,
        spec_key="b" * 64,
        spec=KernelSpec(
            blueprint="low_rank",
            hparams={"rank": 4},
            input_shape=(8,),
            torch_version=torch.__version__,
        ),
        param_count=64,
        artifact_bytes=16000,
        latency_us_p50=20.0,
        latency_us_p95=25.0,
        latency_batch=64,
        compile_s=0.3,
    )

    def both() -> None:
        event.model_dump_json()
        meta.model_dump_json()

    benchmark.group = "plumbing"
    benchmark(both)
    per_second = 2 / benchmark.stats.stats.median
    benchmark.extra_info.update(messages_per_s=per_second, target=100_000)
    print(f"\ncontract serialisation: {per_second:,.0f} messages/s")
    assert per_second >= 100_000


def test_config_compose(benchmark) -> None:
    def compose_default() -> None:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            compose("config", overrides=["run_dir=/tmp/x", "policy=random", "seed=3"])

    benchmark.group = "plumbing"
    benchmark.pedantic(compose_default, rounds=20, warmup_rounds=2)
    median_ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info.update(median_ms=median_ms, target_ms=100)
    print(f"\nconfig compose: {median_ms:.1f} ms")
    assert median_ms <= 100
