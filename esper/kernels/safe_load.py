"""Kernel artifacts come from stores that other people write: read them as data, never as code.

`torch.export.load` trusts its input. For torch 2.13 we found it runs code from an archive in
four ways: it unpickles members (`use_pickle` weights and constants, opaque-object constants,
and the sample inputs, where it retries with `weights_only=False` when the weights-only loader
fails); it hands `data/aotinductor/` to a native-library loader; it evaluates symbolic-shape
strings with `sympy.sympify` (Python `eval`); and `.module()` pastes strings from the archive
(guards, argument and attribute names) into the Python source it generates and executes.

So before torch sees an artifact, `check_artifact` holds it to what `torch.export.save` writes
for a plain kernel: known members only; raw tensor payloads; JSON whose names are plain
identifiers, whose shape expressions use only sympy's arithmetic, whose graph calls only aten
operators (none that touch files), with no guard code; and sample inputs that torch's
weights-only unpickler accepts (so torch never falls back). `load_program` then loads with the
archive loader directly, which has no legacy fallback. Anything else is refused, with the
reason, as an `UnsafeArtifactError`; the library quarantines the object and compiles again.
"""

from __future__ import annotations

import io
import json
import operator
import re
import tokenize
import warnings
from typing import Any

import torch
from torch.export import ExportedProgram


class KernelIntegrityError(RuntimeError):
    """The stored object is not the kernel its id names, or not one we can load safely."""


class UnsafeArtifactError(KernelIntegrityError):
    """The artifact holds something a plain kernel never holds, or that would run code."""


WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
MODEL = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
REQUIRED = ("archive_format", MODEL, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS)
MEMBER = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
)
NAME = re.compile(r"[A-Za-z0-9_.+\-]*")  # identifiers, dotted paths, versions like 2.13.0+cpu
LINE_BREAK = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00]")
QUOTE_OR_BREAK = re.compile(r"['\"\\\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00]")

ATEN = re.compile(r"torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)")
FILE_OPERATORS = frozenset({"from_file", "save", "_print"})
OPERATOR_BUILTINS = frozenset(
    [
        "getitem",
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "abs",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "xor",
        "not_",
        "invert",
        "lshift",
        "rshift",
    ]
)
TORCH_SYM = frozenset(
    ["sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_sqrt", "sym_ite", "sym_sum"]
)

# What sympy may see: its arithmetic and relations, torch's shape functions, assumptions and
# symbols such as s31 or u0. No attribute access, no other names: nothing reaches builtins.
EXPR_NAMES = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "Equality",
        "Unequality",
        "floor",
        "ceiling",
        "oo",
        "zoo",
        "nan",
        "int_oo",
        "IntInfinity",
        "NegativeIntInfinity",
        "Infinity",
        "NegativeInfinity",
        "true",
        "false",
        "True",
        "False",
        "None",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "positive",
        "negative",
        "nonnegative",
        "nonpositive",
        "integer",
        "real",
        "finite",
        "infinite",
        "zero",
        "nonzero",
        "even",
        "odd",
        "rational",
        "commutative",
        "extended_real",
    ]
)
SYMBOL = re.compile(r"[a-z]{1,4}\d+")
QUOTED_SYMBOL = re.compile(r"""(['"])[a-z]{1,4}\d+\1""")
EXPR_OPS = frozenset(
    [
        "(",
        ")",
        ",",
        "=",
        "+",
        "-",
        "*",
        "/",
        "**",
        "//",
        "%",
        "<",
        ">",
        "<=",
        ">=",
        "==",
        "!=",
        "&",
        "|",
        "~",
    ]
)


def refuse(reason: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(f"refused to load: {reason}; nothing in it was run")


def _members(artifact: bytes) -> dict[str, bytes]:
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(artifact))
        names = reader.get_all_records()
    except Exception as exc:  # noqa: BLE001 - any failure to parse means "not an archive"
        raise refuse(f"not a PT2 archive ({_one_line(exc)})") from None
    unknown = sorted(n for n in names if not MEMBER.fullmatch(n))
    if unknown:
        raise refuse(f"member {unknown[0]!r} is not part of a plain torch.export kernel")
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise refuse(f"member {missing[0]!r} is missing")
    total = sum(reader.get_record_size(n) for n in names)
    if total > 2 * len(artifact) + (1 << 20):
        raise refuse(f"members expand to {total} bytes from {len(artifact)}")
    return {n: reader.get_record(n) for n in names}


def _one_line(exc: BaseException) -> str:
    """The exception's first sentence: torch's messages run to paragraphs."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0][:160] if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _json(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(f"{name} is not JSON ({_one_line(exc)})") from None


def _check_name(text: str, where: str) -> None:
    if not NAME.fullmatch(text):
        raise refuse(f"{where} holds {text[:80]!r}, not a plain name")


def _check_target(target: object, where: str) -> None:
    if not isinstance(target, str):
        raise refuse(f"{where}: operator {target!r} is not a name")
    aten = ATEN.fullmatch(target)
    if aten:
        if aten.group(1) in FILE_OPERATORS:
            raise refuse(f"{where}: the graph calls {target}, which reads or writes files")
        return
    if target.startswith("_operator.") and target[len("_operator.") :] in OPERATOR_BUILTINS:
        return
    if target.startswith("torch.") and target[len("torch.") :] in TORCH_SYM:
        return
    raise refuse(f"{where}: the graph calls {target[:80]!r}; a kernel may call aten operators only")


def _check_expression(text: object, where: str) -> None:
    """Only arithmetic on symbols: sympy.sympify evaluates this string with Python's eval."""
    if not isinstance(text, str) or len(text) > 4096 or LINE_BREAK.search(text):
        raise refuse(f"{where}: shape expression {str(text)[:80]!r} is not plain arithmetic")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise refuse(f"{where}: shape expression {text[:80]!r} ({_one_line(exc)})") from None
    for token in tokens:
        kind, value = token.type, token.string
        allowed = (
            (kind == tokenize.NAME and (value in EXPR_NAMES or SYMBOL.fullmatch(value)))
            or kind in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
            or (kind == tokenize.OP and value in EXPR_OPS)
            or (kind == tokenize.STRING and QUOTED_SYMBOL.fullmatch(value))
        )
        if not allowed:
            raise refuse(
                f"{where}: shape expression {text[:80]!r} uses {value!r}, which is not "
                "sympy arithmetic"
            )


def _walk(value: Any, where: str) -> None:
    """Every string of the serialised program, held to what its field may contain."""
    if isinstance(value, dict):
        if {"target", "inputs", "outputs"} <= value.keys():
            _check_target(value["target"], f"{where} node {str(value.get('name'))[:40]!r}")
        for key, item in value.items():
            _check_name(str(key), where)
            path = f"{where}.{key}"
            if key == "target" and "inputs" in value:
                continue
            if key == "metadata":  # free text, but never a line of generated source
                _walk_text(item, path, LINE_BREAK)
            elif key in ("as_string", "as_strings"):  # repr()'d into generated source
                _walk_text(item, path, QUOTE_OR_BREAK)
            elif key == "expr_str":
                _check_expression(item, path)
            elif key == "as_operator":
                _check_target(item, path)
            elif key == "guards_code":
                if item:
                    raise refuse(f"{path} holds Python source, which a kernel never needs")
            elif key in ("in_spec", "out_spec", "context") and isinstance(item, str):
                try:
                    _walk(json.loads(item), path)
                except ValueError:
                    raise refuse(f"{path} is not JSON") from None
            else:
                _walk(item, path)
    elif isinstance(value, list):
        for item in value:
            _walk(item, where)
    elif isinstance(value, str):
        _check_name(value, where)


def _walk_text(value: Any, where: str, forbidden: re.Pattern[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_name(str(key), where)
            _walk_text(item, where, forbidden)
    elif isinstance(value, list):
        for item in value:
            _walk_text(item, where, forbidden)
    elif isinstance(value, str) and forbidden.search(value):
        raise refuse(f"{where} holds {value[:80]!r}, with quotes or line breaks")


def _check_payloads(members: dict[str, bytes], name: str, prefix: str) -> None:
    """Weights and constants must be raw tensor bytes: never pickled, never objects."""
    document = _json(members, name)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise refuse(f"{name} has no config")
    _walk(document, name)
    folder = name.rsplit("/", 1)[0]
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise refuse(f"{name}: {fqn!r} is pickled; a kernel stores raw tensors only")
        path = meta.get("path_name")
        if not (isinstance(path, str) and re.fullmatch(prefix + r"\d+", path)):
            raise refuse(f"{name}: {fqn!r} is stored as {str(path)[:80]!r}, not a raw tensor")
        if f"{folder}/{path}" not in members or not isinstance(meta.get("tensor_meta"), dict):
            raise refuse(f"{name}: the tensor {fqn!r} is missing")


def _check_sample_inputs(data: bytes) -> None:
    """torch loads these weights-only and, should that fail, unpickles them fully: so fail
    here first, with the same loader, and torch never gets to its fallback."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means torch would fall back
        raise refuse(
            f"{SAMPLE_INPUTS} needs more than torch's weights-only unpickler ({_one_line(exc)})"
        ) from None


def check_artifact(artifact: bytes) -> None:
    """Raise UnsafeArtifactError unless the artifact is data that torch can load safely."""
    members = _members(artifact)
    if members["archive_format"] != b"pt2":
        raise refuse("archive_format is not pt2")
    _check_payloads(members, WEIGHTS_CONFIG, "weight_")
    _check_payloads(members, CONSTANTS_CONFIG, "tensor_")
    _walk(_json(members, MODEL), MODEL)
    _check_sample_inputs(members[SAMPLE_INPUTS])


def _check_graph(program: ExportedProgram) -> None:
    """The same rule on what was loaded: every call is an aten operator or a plain builtin."""
    builtins = {getattr(operator, name) for name in OPERATOR_BUILTINS}
    builtins |= {getattr(torch, name) for name in TORCH_SYM if hasattr(torch, name)}
    for node in program.graph.nodes:
        if node.op in ("call_module", "call_method"):
            raise refuse(f"graph node {node.name} is a {node.op}")
        if node.op != "call_function" or node.target in builtins:
            continue
        target = node.target
        if not (
            isinstance(target, torch._ops.OpOverload)
            and target.namespace == "aten"
            and target._schema.name.split("::")[-1] not in FILE_OPERATORS
        ):
            raise refuse(f"graph node {node.name} calls {target}")


def load_program(artifact: bytes) -> ExportedProgram:
    """Check the artifact, then load it with the archive loader alone (no legacy fallback)."""
    try:
        check_artifact(artifact)
    except UnsafeArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. JSON nested past the recursion limit
        raise refuse(f"it cannot be checked ({_one_line(exc)})") from None
    from torch.export.pt2_archive._package import load_pt2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = load_pt2(io.BytesIO(artifact)).exported_programs["model"]
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the object is unusable
        raise refuse(f"torch could not load it ({_one_line(exc)})") from None
    _check_graph(program)
    return program
