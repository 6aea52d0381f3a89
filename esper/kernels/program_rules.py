"""What a plain kernel's program may say, both as serialised JSON and as the graph torch loads.

`.module()` pastes strings from the archive (guards, argument and attribute names) into the
Python source it generates and executes, and the graph may name any callable. So every string
of the serialised program is held to what its field may contain (plain names, text without
quotes or line breaks, sympy arithmetic, aten operators), guard code is refused, and after
loading the same operator rule is applied to the graph itself.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

import torch
from torch.export import ExportedProgram

from esper.kernels.integrity import refuse
from esper.kernels.shape_expressions import LINE_BREAK, check_expression

NAME = re.compile(r"[A-Za-z0-9_.+\-]*")  # identifiers, dotted paths, versions like 2.13.0+cpu
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


def check_name(text: str, where: str) -> None:
    """Names end up as identifiers in generated source: nothing but name characters."""
    if not NAME.fullmatch(text):
        raise refuse(f"{where} holds {text[:80]!r}, not a plain name")


def check_target(target: object, where: str) -> None:
    """A serialised call may name an aten operator (none that touch files), an `operator`
    builtin or a torch symbolic-shape function: anything else could be any callable."""
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


def walk(value: Any, where: str) -> None:
    """Every string of the serialised program, held to what its field may contain."""
    if isinstance(value, dict):
        if {"target", "inputs", "outputs"} <= value.keys():
            check_target(value["target"], f"{where} node {str(value.get('name'))[:40]!r}")
        for key, item in value.items():
            check_name(str(key), where)
            path = f"{where}.{key}"
            if key == "target" and "inputs" in value:
                continue
            if key == "metadata":  # free text, but never a line of generated source
                _walk_text(item, path, LINE_BREAK)
            elif key in ("as_string", "as_strings"):  # repr()'d into generated source
                _walk_text(item, path, QUOTE_OR_BREAK)
            elif key == "expr_str":
                check_expression(item, path)
            elif key == "as_operator":
                check_target(item, path)
            elif key == "guards_code":
                if item:
                    raise refuse(f"{path} holds Python source, which a kernel never needs")
            elif key in ("in_spec", "out_spec", "context") and isinstance(item, str):
                try:
                    walk(json.loads(item), path)
                except ValueError:
                    raise refuse(f"{path} is not JSON") from None
            else:
                walk(item, path)
    elif isinstance(value, list):
        for item in value:
            walk(item, where)
    elif isinstance(value, str):
        check_name(value, where)


def _walk_text(value: Any, where: str, forbidden: re.Pattern[str]) -> None:
    """Free text: any words, but none of `forbidden` (keys are still plain names)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_name(str(key), where)
            _walk_text(item, where, forbidden)
    elif isinstance(value, list):
        for item in value:
            _walk_text(item, where, forbidden)
    elif isinstance(value, str) and forbidden.search(value):
        raise refuse(f"{where} holds {value[:80]!r}, with quotes or line breaks")


def check_graph(program: ExportedProgram) -> None:
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
