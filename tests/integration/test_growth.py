"""The research claim in the README, measured the way the README states it."""

from __future__ import annotations

import json
import statistics

import pytest

from esper.app import build


@pytest.mark.slow
def test_heuristic_growth_beats_the_undersized_host_over_three_seeds(make_config, tmp_path) -> None:
    accuracy: dict[str, list[float]] = {"none": [], "heuristic": []}
    for policy in accuracy:
        for seed in (0, 1, 2):
            cfg = make_config(
                f"policy={policy}",
                f"seed={seed}",
                "logger=none",
                "trainer.checkpoint=false",
                run_dir=tmp_path / f"{policy}-{seed}",
            )
            summary = build(cfg).run().model_dump(mode="json")
            accuracy[policy].append(summary["metrics"]["test_accuracy"])
            if policy == "heuristic":
                assert summary["params"]["seeds"] > 0
    none, heuristic = statistics.mean(accuracy["none"]), statistics.mean(accuracy["heuristic"])
    assert heuristic > none + 0.05, accuracy


EARLY = (
    "policy.patience=1",
    "policy.warmup_epochs=2",
    "policy.min_delta=1.0",
    "trainer.max_epochs=20",
)
"""Two seeds germinated (at epochs 1 and 9) in a quarter of the default run's 80 epochs."""


def test_a_second_run_shares_every_kernel_from_the_store(make_config, tmp_path) -> None:
    first = (
        build(
            make_config(
                *EARLY,
                "logger=none",
                "trainer.checkpoint=false",
                "kernels.preflight=false",  # the first run compiles while it trains
                run_dir=tmp_path / "a",
            )
        )
        .run()
        .model_dump(mode="json")
    )
    second = (
        build(
            make_config(
                *EARLY,
                "logger=none",
                "trainer.checkpoint=false",
                "kernels.preflight=false",
                run_dir=tmp_path / "b",
            )
        )
        .run()
        .model_dump(mode="json")
    )
    assert first["kernels"] and first["kernels"][0]["source"] == "compiled"
    assert first["kernel_library"]["compiles"] >= 1
    assert [k["kernel_id"] for k in second["kernels"]] == [k["kernel_id"] for k in first["kernels"]]
    assert {k["source"] for k in second["kernels"]} <= {"memory", "store"}
    assert second["kernel_library"]["compiles"] == 0
    assert second["metrics"] == first["metrics"], "same seed, same kernels: the same run"


def test_a_corrupted_stored_kernel_is_quarantined_reported_and_compiled_again(
    make_config, tmp_path, kernel_store
) -> None:
    first = (
        build(
            make_config(*EARLY, "logger=none", "trainer.checkpoint=false", run_dir=tmp_path / "a")
        )
        .run()
        .model_dump(mode="json")
    )
    kernel_id = first["kernels"][0]["kernel_id"]
    artifact = kernel_store / "objects" / kernel_id[:2] / f"{kernel_id}.pt2"
    artifact.write_bytes(artifact.read_bytes()[:1000])
    second = (
        build(
            make_config(
                *EARLY,
                "logger=none",
                "trainer.checkpoint=false",
                "kernels.preflight=false",
                run_dir=tmp_path / "b",
            )
        )
        .run()
        .model_dump(mode="json")
    )
    assert second["status"] == "completed"
    assert second["kernel_library"]["quarantined"] == [kernel_id]
    assert second["kernel_library"]["compiles"] == 1
    (reported,) = second["quarantined"]
    assert reported["kernel_id"] == kernel_id and "tampered" in reported["error"]
    events = [
        json.loads(line) for line in (tmp_path / "b" / "events.jsonl").read_text().splitlines()
    ]
    assert [e["kernel_id"] for e in events if e["kind"] == "kernel_quarantined"] == [kernel_id]
    assert second["metrics"] == first["metrics"], "the same kernel, compiled again"


def test_the_config_hash_names_the_experiment_not_the_job(make_config, tmp_path) -> None:
    from omegaconf import OmegaConf

    from esper.app import config_hash

    def hashed(*overrides: str) -> str:
        cfg = make_config("logger=none", *overrides, run_dir=tmp_path / "r")
        return config_hash(OmegaConf.to_container(cfg, resolve=True))

    base = hashed()
    assert hashed("seed=7") == base
    assert hashed("storage.root=/elsewhere") == base
    assert hashed("policy=random") != base
    assert hashed("model.hidden=[16,16]") != base
