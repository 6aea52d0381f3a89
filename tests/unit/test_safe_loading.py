"""Nothing read from a kernel store or a CIFAR folder may run code.

Each crafted input below carries a payload whose execution would create a marker directory;
loading must refuse it with a reason, and the marker must not exist afterwards. The helpers
(`craft`, `rebuild`, `records`) are shared with tests/integration/test_crafted_artifacts.py.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter

from esper import blueprints
from esper.contracts import KernelSpec
from esper.data import cifar10
from esper.kernels import KernelIntegrityError, compile_kernel, instantiate, load_artifact
from esper.kernels.compiler import check_against_builder, mode_dependence, sha256
from tests.conftest import shipped_blueprints

SHAPES = {"vector": (8,), "image": (4, 6, 6), "sequence": (5, 8)}


class Payload:
    """Unpickling this creates the directory `marker`: proof that the loader ran our code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))


def kernel_spec(blueprint: str = "residual_mlp", shape: tuple[int, ...] = (8,)) -> KernelSpec:
    hparams = {"hidden": 16} if blueprint == "residual_mlp" else {}
    return KernelSpec(
        blueprint=blueprint, hparams=hparams, input_shape=shape, torch_version=torch.__version__
    )


def records(artifact: bytes) -> dict[str, bytes]:
    """The archive's members, read with torch's own reader (names without the root folder)."""
    reader = PT2ArchiveReader(io.BytesIO(artifact))
    return {name: reader.read_bytes(name) for name in reader.get_file_names()}


def rebuild(members: dict[str, bytes]) -> bytes:
    """A PT2 archive written with torch's own writer (it adds `.data/` members itself)."""
    buffer = io.BytesIO()
    with PT2ArchiveWriter(buffer) as writer:
        for name, data in members.items():
            if not name.startswith(".data/"):
                writer.write_bytes(name, data)
    return buffer.getvalue()


def _model(members: dict[str, bytes]) -> dict:
    return json.loads(members["models/model.json"])


CRAFTS = (
    "pickled_weight",
    "pickled_sample_inputs",
    "torch_saved_sample_inputs",
    "opaque_constant",
    "sympy_expression",
    "guards_code",
    "generated_source",
    "file_operator",
    "aot_inductor_member",
)


def craft(artifact: bytes, kind: str, marker: Path) -> bytes:
    """A legitimate artifact with one malicious change of the given kind."""
    members = records(artifact)
    evil = pickle.dumps(Payload(marker), protocol=2)
    if kind == "pickled_weight":  # torch.load(weights_only=False) of a "pickled" weight
        config = json.loads(members["data/weights/model_weights_config.json"])
        fqn, meta = next(iter(config["config"].items()))
        config["config"][fqn] = {**meta, "use_pickle": True}
        members["data/weights/model_weights_config.json"] = json.dumps(config).encode()
        members[f"data/weights/{meta['path_name']}"] = evil
    elif kind == "pickled_sample_inputs":  # weights-only load fails, torch falls back
        members["data/sample_inputs/model.pt"] = evil
    elif kind == "torch_saved_sample_inputs":
        buffer = io.BytesIO()
        torch.save(Payload(marker), buffer)
        members["data/sample_inputs/model.pt"] = buffer.getvalue()
    elif kind == "opaque_constant":  # pickle.loads of an "opaque object" constant
        config = {
            "config": {
                "c": {
                    "path_name": "opaque_obj_0",
                    "is_param": False,
                    "use_pickle": True,
                    "tensor_meta": None,
                }
            }
        }
        members["data/constants/model_constants_config.json"] = json.dumps(config).encode()
        members["data/constants/opaque_obj_0"] = evil
    elif kind == "sympy_expression":  # sympy.sympify evaluates shape expressions with eval
        text = members["models/model.json"].decode()
        symbol = "positive=True, integer=True)"
        assert symbol in text
        members["models/model.json"] = text.replace(
            symbol, f"positive=__import__('os').mkdir({str(marker)!r}) is None, integer=True)"
        ).encode()
    elif kind == "guards_code":  # Python source compiled into the module's forward
        model = _model(members)
        model["guards_code"] = [f"__import__('os').mkdir({str(marker)!r}) is None"]
        members["models/model.json"] = json.dumps(model).encode()
    elif kind == "generated_source":  # argument names pasted into generated Python source
        model = _model(members)
        signature = model["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"input=__import__('os').mkdir({str(marker)!r})"]
        members["models/model.json"] = json.dumps(model).encode()
    elif kind == "file_operator":  # an aten operator that reads or writes files
        model = _model(members)
        model["graph_module"]["graph"]["nodes"].insert(
            0,
            {
                "target": "torch.ops.aten.save.default",
                "inputs": [
                    {"name": "item", "arg": {"as_int": 1}, "kind": 1},
                    {"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                ],
                "outputs": [],
                "metadata": {},
                "is_hop_single_tensor_return": None,
                "name": "save",
            },
        )
        members["models/model.json"] = json.dumps(model).encode()
    elif kind == "aot_inductor_member":  # load_pt2 hands data/aotinductor/ to a native loader
        members["data/aotinductor/model/model.wrapper.so"] = b"\x7fELF not really"
    else:
        raise ValueError(kind)
    return rebuild(members)


def load_and_run(artifact: bytes) -> None:
    """Everything a run does with a stored kernel: verify, load, instantiate, forward."""
    module = instantiate(load_artifact(artifact, sha256(artifact)))
    module(torch.randn(3, 8))


@pytest.fixture(scope="module")
def legit() -> bytes:
    return compile_kernel(kernel_spec(), (2,), reference_batch=2).artifact


def test_a_rebuilt_legitimate_artifact_still_loads(legit: bytes) -> None:
    """Control: the crafting helpers alone do not make an artifact unloadable."""
    load_and_run(rebuild(records(legit)))


@pytest.mark.parametrize("kind", CRAFTS)
def test_crafted_artifact_is_refused_and_runs_nothing(
    legit: bytes, kind: str, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    crafted = craft(legit, kind, marker)
    with pytest.raises(KernelIntegrityError, match="refused") as caught:
        load_and_run(crafted)
    assert not marker.exists(), f"{kind}: the payload ran"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "blueprint,kind",
    [(name, kind) for name in shipped_blueprints() for kind in blueprints.get(name).kinds],
)
def test_every_builtin_blueprint_round_trips(blueprint: str, kind: str) -> None:
    compiled = compile_kernel(kernel_spec(blueprint, SHAPES[kind]), (2,), reference_batch=2)
    loaded = instantiate(load_artifact(compiled.artifact, compiled.metadata.kernel_id))
    eager = blueprints.build(blueprint, SHAPES[kind], compiled.metadata.spec.hparams, seed=0)
    x = torch.randn(3, *SHAPES[kind])
    torch.testing.assert_close(loaded(x), eager(x))
    check_against_builder(compiled.metadata.spec, compiled.program)  # as at each store load


def test_garbage_with_a_matching_id_is_refused_not_crashed() -> None:
    for data in (b"", b"not a zip at all", b"PK\x03\x04" + bytes(100)):
        with pytest.raises(KernelIntegrityError, match="refused"):
            load_artifact(data, sha256(data))


# -- CIFAR -------------------------------------------------------------------------------
def write_batches(root: Path, protocol: int = 2, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            "batch_label": f"{name} of 5",
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=per_batch).tolist(),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path: Path, protocol: int) -> None:
    write_batches(tmp_path, protocol)
    assert cifar10(str(tmp_path), batch_size=4).sizes() == {"train": 18, "val": 2, "test": 4}


def _str2(text: bytes) -> bytes:
    """SHORT_BINSTRING: how Python 2 pickled a str."""
    return b"U" + bytes([len(text)]) + text


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """The bytes cPickle (protocol 2) wrote for the real CIFAR-10 files, opcode by opcode."""
    rows, width = data.shape
    raw = data.tobytes()
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _str2(b"b")
        + b"\x87R(K\x01M"
        + struct.pack("<H", rows)
        + b"M"
        + struct.pack("<H", width)
        + b"\x86cnumpy\ndtype\n"
        + _str2(b"u1")
        + b"K\x00K\x01\x87R(K\x03"
        + _str2(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
        + struct.pack("<I", len(raw))
        + raw
        + b"tb"
    )
    items = b"".join(b"K" + bytes([label]) for label in labels)
    return (
        b"\x80\x02}("
        + _str2(b"data")
        + array
        + _str2(b"labels")
        + b"]("
        + items
        + b"e"
        + _str2(b"batch_label")
        + _str2(b"testing batch 1 of 1")
        + b"u."
    )


def test_python2_cifar_batch_loads(tmp_path: Path) -> None:
    """The real files were written by Python 2 (str as latin-1 bytes, numpy.core names)."""
    folder = write_batches(tmp_path)
    data = np.random.default_rng(1).integers(0, 256, size=(4, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(python2_batch(data, [1, 2, 3, 4]))
    loaded = cifar10(str(tmp_path), batch_size=4)
    assert loaded.test.y.tolist() == [1, 2, 3, 4]


def _bad_batches(marker: Path, valid: bytes) -> dict[str, bytes]:
    return {
        "payload": pickle.dumps({"data": Payload(marker), "labels": [1]}, protocol=2),
        "empty": b"",
        "random": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "truncated": valid[: len(valid) // 2],
        "not_a_dict": pickle.dumps([1, 2, 3]),
        "missing_labels": pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}),
        "wrong_shape": pickle.dumps({"data": np.zeros((2, 17), np.uint8), "labels": [0, 1]}),
        "label_count": pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),
        "label_range": pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [10]}),
        "object_array": pickle.dumps(
            {"data": np.array([Payload(marker)], dtype=object), "labels": [0]}
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "payload",
        "empty",
        "random",
        "truncated",
        "not_a_dict",
        "missing_labels",
        "wrong_shape",
        "label_count",
        "label_range",
        "object_array",
    ],
)
def test_bad_cifar_batch_is_one_clear_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    folder = write_batches(tmp_path / "root")
    marker = tmp_path / "marker"
    target = folder / "data_batch_3"
    target.write_bytes(_bad_batches(marker, target.read_bytes())[kind])
    with pytest.raises(ValueError, match=r"data_batch_3.*not a valid CIFAR-10 batch") as caught:
        cifar10(str(tmp_path / "root"))
    assert not marker.exists(), "unpickling the batch ran code"
    assert "\n" not in str(caught.value)


def test_a_stored_kernel_that_drops_out_in_evaluation_is_refused() -> None:
    """A kernel exported with a Dropout (before the compiler refused one, or planted) would
    drop out in evaluation too: the library refuses it on load (and compiles again)."""
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    program = torch.export.export(module, (torch.randn(2, 4),))
    for node in program.graph.nodes:  # as the compiler saves a kernel
        node.meta.pop("stack_trace", None)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    artifact = buffer.getvalue()
    with pytest.raises(
        KernelIntegrityError, match=r"its forward draws random numbers \(aten\.dropout"
    ):
        load_artifact(artifact, sha256(artifact))


@pytest.mark.parametrize("running_stats", [True, False])
def test_a_batch_norm_is_refused_where_evaluation_would_use_other_statistics(
    running_stats: bool,
) -> None:
    """Exported from training mode, a BatchNorm with running statistics keeps normalising
    with the batch's after model.eval(); one without them does so in eager too: allowed."""
    module = torch.nn.BatchNorm1d(4, track_running_stats=running_stats)
    program = torch.export.export(module, (torch.randn(3, 4),))
    said = mode_dependence(program)
    if running_stats:
        assert said is not None and said.startswith("normalises with the batch's statistics")
    else:
        assert said is None
