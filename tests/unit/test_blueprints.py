"""The registry-wide contract: every blueprint preserves shape, is identity at birth, learns."""

from __future__ import annotations

import functools
import os
import sys

import pytest
import torch
from torch import nn

from esper import blueprints
from tests.conftest import shipped_blueprints

SHAPES = {"vector": [(8,), (3,)], "image": [(4, 6, 6), (1, 8, 8)], "sequence": [(5, 8)]}


def cases() -> list[tuple[str, tuple[int, ...]]]:
    return [
        (name, shape)
        for name in shipped_blueprints()
        for kind in blueprints.get(name).kinds
        for shape in SHAPES[kind]
    ]


def test_the_required_blueprints_are_registered() -> None:
    assert {
        "residual_mlp",
        "low_rank",
        "conv_residual",
        "depthwise_separable",
        "squeeze_excite",
        "group_norm_gate",
        "bottleneck",
        "attention",
    } <= set(blueprints.names())


@pytest.mark.parametrize(("name", "shape"), cases())
def test_every_registered_blueprint_keeps_the_contract(name: str, shape) -> None:
    blueprints.check_contract(name, shape, seed=3)
    module = blueprints.build(name, shape, seed=3)
    x = torch.randn(4, *shape)
    assert module(x).shape == x.shape and torch.count_nonzero(module(x)) == 0


@pytest.mark.parametrize(("name", "shape"), cases())
def test_builders_are_pure(name: str, shape) -> None:
    a = blueprints.build(name, shape, seed=7).state_dict()
    b = blueprints.build(name, shape, seed=7).state_dict()
    c = blueprints.build(name, shape, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def not_zero_at_birth(shape: tuple[int, ...]) -> nn.Module:
    return nn.Linear(shape[-1], shape[-1])


def test_the_contract_check_catches_a_seed_that_is_not_identity_at_birth() -> None:
    blueprints.register_from_config(
        {"noisy_for_test": {"_target_": f"{__name__}.not_zero_at_birth", "kinds": ["vector"]}}
    )
    with pytest.raises(blueprints.BlueprintContractError, match="not zero at birth"):
        blueprints.check_contract("noisy_for_test", (4,))


def returns_none(shape: tuple[int, ...]) -> None:
    return None


class Detached(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, features)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).detach()


class Counting(Detached):
    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x)


class Widening(Detached):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).double()


def detached(shape: tuple[int, ...]) -> nn.Module:
    return Detached(shape[-1])


def widening(shape: tuple[int, ...]) -> nn.Module:
    return Widening(shape[-1])


def counting(shape: tuple[int, ...]) -> nn.Module:
    return Counting(shape[-1])


@pytest.mark.parametrize(
    ("builder", "said"),
    [
        ("returns_none", "its builder returned NoneType, not an nn.Module"),
        ("detached", r"its output carries no gradient \(detached"),
        ("counting", r"its forward changed its own state \(calls\)"),
        ("widening", "output is float64; it must keep the input's float32"),
    ],
)
def test_a_broken_contract_is_named_by_its_cause(builder, said) -> None:
    """helper-found: these read `'NoneType' object is not callable`, torch's `element 0 of
    tensors does not require grad`, and `the same seed built a different module`."""
    name = f"{builder}_for_test"
    blueprints.register_from_config(
        {name: {"_target_": f"{__name__}.{builder}", "kinds": ["vector"]}}
    )
    with pytest.raises(blueprints.BlueprintContractError, match=said):
        blueprints.check_contract(name, (4,))


def test_unknown_blueprint_and_wrong_kind_and_bad_hparam_are_named() -> None:
    with pytest.raises(KeyError, match="unknown blueprint 'nope'; allowed: residual_mlp"):
        blueprints.build("nope", (4,))
    with pytest.raises(ValueError, match="accepts image activations, not vector"):
        blueprints.build("conv_residual", (4,))
    with pytest.raises(ValueError, match="blueprints.hparams.low_rank.width .*allowed: rank"):
        blueprints.build("low_rank", (4,), {"width": 3})


def test_compatible_filters_by_activation_kind() -> None:
    allowed = ["residual_mlp", "conv_residual", "low_rank", "attention"]
    assert blueprints.compatible((8,), allowed) == ("residual_mlp", "low_rank")
    assert blueprints.compatible((2, 4, 4), allowed) == ("conv_residual",)
    assert blueprints.compatible((5, 8), allowed) == ("residual_mlp", "low_rank", "attention")


def test_causal_attention_never_looks_ahead() -> None:
    module = blueprints.build("attention", (6, 8), seed=0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(2, 6, 8)
    changed = x.clone()
    changed[:, 4:] += torch.randn(2, 2, 8)
    before, after = module(x), module(changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.equal(before[:, 4:], after[:, 4:])
    acausal = blueprints.build("attention", (6, 8), {"causal": False}, seed=0)
    with torch.no_grad():
        for p in acausal.parameters():
            p.add_(torch.randn_like(p))
    assert not torch.equal(acausal(x)[:, :4], acausal(changed)[:, :4])


def test_the_kernel_key_follows_the_user_modules_the_builder_imports(tmp_path, monkeypatch) -> None:
    """The key hashed the builder's own module only, so a custom builder whose helper module
    changed was handed its old kernel from the store; then (helper-found) a module's globals
    were followed, which hold whatever submodules the process had imported, and a
    `functools.partial` builder was named by `functools` alone. The key follows the import
    statements of the user's modules (in a function body too), not the standard library,
    torch, or a module nothing imports."""
    import importlib

    from esper.blueprints.code_digest import _digest, code_digest, source_modules

    package = tmp_path / "digest_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("WIDTH = 8\n")
    (package / "lazy.py").write_text("BIAS = True\n")
    (package / "unrelated.py").write_text("X = 1\n")
    side = tmp_path / "digest_side"  # named under TYPE_CHECKING only: never to be run
    (side / "sub").mkdir(parents=True)
    (side / "__init__.py").write_text("raise SystemExit('run by the digest')\n")
    (side / "sub" / "__init__.py").write_text("")
    (side / "sub" / "types.py").write_text("X = int\n")
    (package / "builder.py").write_text(
        "import dataclasses\nimport functools\nimport json\nfrom typing import TYPE_CHECKING\n"
        "from torch import nn\nimport digest_pkg.helper\n"
        "if TYPE_CHECKING:\n    from digest_side.sub.types import X\n\n"
        "def adapter(shape, width=None):\n"
        "    from digest_pkg import lazy\n"
        "    return nn.Linear(shape[0], width or digest_pkg.helper.WIDTH, bias=lazy.BIAS)\n\n"
        "narrow = functools.partial(adapter, width=4)\n\n"
        "@dataclasses.dataclass\nclass Maker:\n    width: int = 8\n"
        "    def __call__(self, shape):\n        return adapter(shape, self.width)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    module = importlib.import_module("digest_pkg.builder")
    builders = (module.adapter, module.narrow, module.Maker())
    before = [_digest(builder) for builder in builders]
    assert len({*before, _digest(module.Maker(width=4))}) == 4, "each builder its own digest"
    assert code_digest(builders[2]) == before[2], "an unhashable builder is digested uncached"
    assert sorted(source_modules(module.adapter)) == [
        "digest_pkg",
        "digest_pkg.builder",
        "digest_pkg.helper",
        "digest_pkg.lazy",
        "digest_side",  # `from a.b.c import x` runs a's and a.b's __init__ too
        "digest_side.sub",
        "digest_side.sub.types",
    ]
    assert "digest_side" not in sys.modules, "found, not imported: nothing is run for a key"
    importlib.import_module("digest_pkg.unrelated")  # now an attribute of the package
    (package / "unrelated.py").write_text("X = 2\n")
    assert [_digest(builder) for builder in builders] == before
    (package / "lazy.py").write_text("BIAS = False\n")
    after_lazy = [_digest(builder) for builder in builders]
    assert all(a != b for a, b in zip(after_lazy, before))
    (package / "helper.py").write_text("WIDTH = 16\n")
    assert all(a != b for a, b in zip([_digest(builder) for builder in builders], after_lazy))
    # each file's imports are parsed once per version of it: an edit is read again
    (package / "helper.py").write_text("import digest_pkg.unrelated\nWIDTH = 16\n")
    assert "digest_pkg.unrelated" in source_modules(module.adapter)


def test_a_partial_is_named_by_its_arguments_alike_in_every_process() -> None:
    """helper-found: a partial's arguments were named by their repr, which truncates a large
    tensor (two tensors differing in one element shared a kernel) and holds a function's
    address (its kernel was never found again)."""
    from esper.blueprints.code_digest import _described, _digest

    def builder(shape, init=None, act=None):
        return nn.Identity()

    zeros, one_changed = torch.zeros(2000), torch.zeros(2000)
    one_changed[1000] = 1.0
    partials = [functools.partial(builder, init=t) for t in (zeros, one_changed)]
    assert _digest(partials[0]) != _digest(partials[1])
    named = _described({"act": torch.relu, "local": builder})
    assert "0x" not in named and "builder" in named


def test_built_in_kernel_keys_follow_esper_alone() -> None:
    """The built-in builders' digest reads Esper's own modules, never torch's or pydantic's."""
    from esper.blueprints.code_digest import source_modules

    modules = source_modules(blueprints.get("low_rank").builder)
    assert "esper.blueprints.builders" in modules
    assert all(name == "esper" or name.startswith("esper.") for name in modules), modules


def test_an_installed_builder_is_named_by_its_distributions_version() -> None:
    """A builder from an installed package: its own module is hashed, its imports are not
    followed (a library's), and its distribution's version names the rest."""
    from importlib.metadata import version

    import joblib

    from esper.blueprints.code_digest import _installed_version, source_modules

    assert sorted(source_modules(joblib.Parallel)) == ["joblib.parallel"]
    assert _installed_version("joblib.parallel") == f"joblib {version('joblib')}"
    assert _installed_version("esper.blueprints.builders") is None, "Esper's own is followed"


NOTEBOOK_CELL = """
import torch
from torch import nn

WIDTH = {width}

class Adapter(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.down = nn.Linear(features, WIDTH)
        self.up = nn.Linear(WIDTH, features)

    def forward(self, x):
        return self.up(torch.{activation}(self.down(x)))

def build(shape):
    return Adapter(shape[-1])
"""


def test_a_builder_without_a_source_file_is_named_by_its_code(monkeypatch) -> None:
    """helper-found: a builder from a notebook's cell (a module without a source file) was
    named by its name alone, so a seed class changed in the notebook was handed the kernel
    its old code built. Its digest now follows the code of the builder and of the classes
    and functions it names there; the same cell run again keeps it (the kernel is reused)."""
    import types

    from esper.blueprints.code_digest import code_digest

    cell = types.ModuleType("notebook_cell")  # no __file__, no __spec__: Jupyter's __main__
    monkeypatch.setitem(sys.modules, "notebook_cell", cell)

    def run_cell(width: int = 8, activation: str = "tanh") -> str:
        source = NOTEBOOK_CELL.format(width=width, activation=activation)
        exec(compile(source, "<cell>", "exec"), cell.__dict__)
        return code_digest(cell.build)

    first = run_cell()
    assert run_cell() == first, "the same cell again: the same kernel"
    assert run_cell(activation="relu") != first, "the seed class's forward changed"
    assert run_cell(width=16) != first, "a global it reads changed"
    run_cell()
    builder = cell.build
    exec(
        compile(
            NOTEBOOK_CELL.format(width=8, activation="sigmoid").split("def build")[0],
            "<cell>",
            "exec",
        ),
        cell.__dict__,
    )  # the class alone redefined
    assert code_digest(builder) != first, "the same builder object, a new class: not cached"


def test_a_builder_in_a_script_run_directly_is_named_by_the_script(tmp_path) -> None:
    """`python train.py`'s __main__ has a file but no module spec: the script is read."""
    import subprocess

    script = tmp_path / "train.py"
    script.write_text(
        "from torch import nn\n"
        "from esper.blueprints.code_digest import source_modules\n"
        "def build(shape):\n    return nn.Linear(shape[-1], shape[-1])\n"
        "print(dict(source_modules(build)).get('__main__'))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip() == str(script.resolve())


AWKWARD_CELL = """
import numpy as np
from torch import nn

class Scale(nn.Module):
    def forward(self, x):
        return x * {beta}

class NoRepr:
    def __repr__(self):
        raise RuntimeError("no repr")

ACT = Scale()
TABLE = np.zeros(5000)
TABLE[2500] = {entry}
KINDS = {{"relu", "gelu", "silu", "tanh", "elu"}}

def build(shape):
    assert ACT is not None and TABLE is not None and KINDS and "gelu" in {{"relu", "gelu"}}
    return nn.Linear(shape[-1], shape[-1])

def odd_build(shape):  # what cannot be named the same twice: a compile each process
    assert CFG and ODD
    return nn.Linear(shape[-1], shape[-1])

CFG = {{"width": 8}}
CFG["self"] = CFG
ODD = NoRepr()
"""


def test_a_notebook_builders_key_sees_instances_arrays_and_sets(monkeypatch) -> None:
    """helper-found: a class reached through a module-level instance was not followed (its
    changed code was handed the old kernel); a large array was named by its truncated repr; a
    set's order followed the hash seed (a new key in each process); a repr that raises, or a
    dict that holds itself, was a traceback."""
    import types

    from esper.blueprints.code_digest import code_digest

    cell = types.ModuleType("awkward_cell")
    monkeypatch.setitem(sys.modules, "awkward_cell", cell)

    def run_cell(beta: float = 1.0, entry: float = 0.0) -> str:
        exec(compile(AWKWARD_CELL.format(beta=beta, entry=entry), "<cell>", "exec"), cell.__dict__)
        return code_digest(cell.build)

    first = run_cell()
    assert code_digest(cell.odd_build), "a repr that raises, a dict that holds itself: a key"
    assert run_cell(beta=5.0) != first, "a class reached through an instance changed"
    assert run_cell(entry=1.0) != first, "one element of a large array changed"
    assert sorted(str(v) for v in cell.KINDS) == ["elu", "gelu", "relu", "silu", "tanh"]
    import subprocess

    script = (
        "import sys, types\nfrom esper.blueprints.code_digest import code_digest\n"
        "cell = types.ModuleType('awkward_cell'); sys.modules['awkward_cell'] = cell\n"
        f"exec(compile({AWKWARD_CELL.format(beta=1.0, entry=0.0)!r}, '<cell>', 'exec'), cell.__dict__)\n"
        "print(code_digest(cell.build))\n"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert len(keys) == 1, f"the same cell, two hash seeds: {keys}"
