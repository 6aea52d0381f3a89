"""k active (fossilized) seeds in slots vs the same kernel modules hard-coded in a plain
nn.Module: one training step, target <= 1.05x. Both sides run the very same exported kernels,
so the ratio is what the slots cost. A second figure, exported kernel vs eager blueprint, shows
what torch.export's module costs on its own."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import esper
from esper import blueprints
from esper.contracts import KernelSpec
from esper.kernels import KernelLibrary, LocalStore
from esper.seeds import MorphogeneticModel
from tests.benchmarks.conftest import interleaved_ratio
from tests.benchmarks.hosts import HOSTS
from tests.benchmarks.test_dormant_overhead import train_step

TARGET = 1.05


class HardCoded(nn.Module):
    """The host with `y + seed(y)` written after each site, by forward hooks' equivalent: the
    site modules are replaced by Sequential-like wrappers that add the seed."""

    def __init__(self, host: nn.Module, seeds: dict[str, nn.Module]) -> None:
        super().__init__()
        self.host = host
        for name, seed in seeds.items():
            parent_name, _, child = name.rpartition(".")
            parent = host.get_submodule(parent_name) if parent_name else host
            setattr(parent, child, _Residual(getattr(parent, child), seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.host(x)


class _Residual(nn.Module):
    def __init__(self, site: nn.Module, seed: nn.Module) -> None:
        super().__init__()
        self.site = site
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.site(x)
        return y + self.seed(y)


def grown(host_name: str, tmp_path) -> tuple[MorphogeneticModel, nn.Module, dict[str, nn.Module]]:
    spec = HOSTS[host_name]
    torch.manual_seed(0)
    host = spec.make()
    x, _ = spec.inputs()
    model = esper.wrap(
        copy.deepcopy(host), spec.sites, example_input=x[:2], latency_sample_every=25
    )
    library = KernelLibrary(
        LocalStore(tmp_path), latency_batches=(8,), reference_batch=8, async_compile=False
    )
    seeds = {}
    for slot in model.iter_slots():
        kernel_spec = KernelSpec(
            blueprint=spec.blueprint,
            input_shape=slot.shape,
            torch_version=torch.__version__,
            hparams=blueprints.get(spec.blueprint).defaults,
        )
        loaded = library.get(kernel_spec)
        slot.germinate(spec.blueprint)
        slot.attach(loaded.module, loaded.metadata.kernel_id)
        slot.start_training()
        slot.start_blending(steps=1)
        slot.fossilize()
        seeds[slot.name] = loaded.module
    return model, host, seeds


@pytest.mark.parametrize("host_name", ["mlp", "mlp_wide", "cnn", "transformer_tiny"])
def test_active_seeds_vs_hard_coded(benchmark, host_name: str, tmp_path) -> None:
    model, host, seeds = grown(host_name, tmp_path)
    hard = HardCoded(copy.deepcopy(host), seeds)
    x, y = HOSTS[host_name].inputs()
    torch.testing.assert_close(model(x), hard(x))
    ratio, slots_us, hard_us = interleaved_ratio(train_step(model, x, y), train_step(hard, x, y))
    benchmark.extra_info.update(
        ratio=ratio, slots_us=slots_us, hard_coded_us=hard_us, target=TARGET, seeds=len(seeds)
    )
    benchmark.group = "active-overhead"
    benchmark(train_step(model, x, y))
    print(f"\n{host_name}: slots {slots_us:.1f}us hard-coded {hard_us:.1f}us ratio {ratio:.4f}")
    assert ratio <= TARGET


@pytest.mark.parametrize("host_name", ["mlp", "transformer_tiny"])
def test_exported_kernel_vs_eager_blueprint(benchmark, host_name: str, tmp_path) -> None:
    model, host, seeds = grown(host_name, tmp_path)
    spec = HOSTS[host_name]
    eager = {
        name: blueprints.build(
            spec.blueprint, model.slot(name).shape, blueprints.get(spec.blueprint).defaults
        )
        for name in seeds
    }
    exported = HardCoded(copy.deepcopy(host), seeds)
    plain = HardCoded(copy.deepcopy(host), eager)
    x, y = spec.inputs()
    ratio, exported_us, eager_us = interleaved_ratio(
        train_step(exported, x, y), train_step(plain, x, y)
    )
    benchmark.extra_info.update(ratio=ratio, exported_us=exported_us, eager_us=eager_us)
    benchmark.group = "export-overhead"
    benchmark(train_step(exported, x, y))
    print(f"\n{host_name}: exported {exported_us:.1f}us eager {eager_us:.1f}us ratio {ratio:.4f}")
