"""What a blueprint's kernels were built from beyond its name and hyper-parameters: its
builder's code, hashed into each `KernelSpec` (`code`), so that a kernel store never hands back
a kernel that other code built (helper-found: a custom blueprint whose builder changed was
handed its old kernel, silently; then one whose helper module changed; then a
`functools.partial` builder, whose module is `functools`).

The digest covers the builder's qualified name and the source of its module and,
transitively, of every module those sources import that is the user's code (or Esper's own):
read from the files' import statements, anywhere in them, so it does not depend on what else
the process has imported. Not followed: the standard library and installed packages
(`site-packages`, `dist-packages`; torch's version is in the spec); a builder that is itself
installed there is named by its distribution's version. A builder without a source file (a
notebook's cell, `python -c`) is named by its code objects instead: the bytecode, constants
and names of the builder and of every function and class of its module it reaches
(helper-found: it was named alone, so a notebook's changed seed class was handed the kernel
its old code built).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import sys
import sysconfig
from collections.abc import Callable, Iterator
from importlib.machinery import PathFinder
from pathlib import Path
from types import CodeType
from typing import Any

import numpy as np
import torch

LIBRARY_DIRS = ("site-packages", "dist-packages")
"""A file under a directory of one of these names is an installed package's."""


def code_digest(builder: Callable[..., Any]) -> str:
    """16 hex digits naming the builder's code (see the module's text); computed once per
    builder and process where the builder can be a cache key and its module is a file (a
    notebook redefines a class its unchanged builder names: computed each time there)."""
    if _origin(getattr(_unwrapped(builder), "__module__", None) or "") is None:
        return _digest(builder)
    try:
        return _cached_digest(builder)
    except TypeError:  # an unhashable callable (a dataclass instance): computed each time
        return _digest(builder)


def _digest(builder: Callable[..., Any]) -> str:
    function = _unwrapped(builder)
    module = getattr(function, "__module__", None) or ""
    name = f"{module}.{getattr(function, '__qualname__', type(function).__qualname__)}"
    digest = hashlib.sha256((name + _bound_arguments(builder)).encode())
    sources = source_modules(builder)
    for module_name, path in sorted(sources.items()):
        try:
            source = path.read_bytes()
        except OSError:  # gone since its import: its name alone
            source = b""
        digest.update(b"\0" + module_name.encode() + b"\0" + source)
    if not sources:  # no source file: its code objects (a notebook's cell)
        for part in _code_reached(_unwrapped(builder), module, set()):
            digest.update(b"\0" + part)
    version = _installed_version(module)
    if version is not None:
        digest.update(b"\0version\0" + version.encode())
    return digest.hexdigest()[:16]


_cached_digest = functools.cache(_digest)


def _bound_arguments(builder: Callable[..., Any]) -> str:
    """A `functools.partial`'s arguments, outermost first, and a callable instance's fields:
    two partials of one function are two builders."""
    bound = ""
    while isinstance(builder, functools.partial):
        bound += f" partial{_described(builder.args)}{_described(builder.keywords)}"
        builder = builder.func
    if _unwrapped(builder) is type(builder):  # a callable instance
        bound += f" instance {_described(getattr(builder, '__dict__', repr(builder)))}"
    return bound


def _described(value: Any, depth: int = 0) -> str:
    """A value as the same text in every process (helper-found: a repr truncates a large
    tensor or array, so two differing in one element named one kernel; a function's holds its
    address, so its kernel was never found again; a set's order follows the hash seed): a
    tensor or array by its bytes' hash, a function or class by its qualified name, containers
    item by item (sets sorted). Anything else by its repr; one with an address, one whose
    repr fails, or a container nested past `MAX_DEPTH` (one that holds itself) by its type and
    address: that costs a compile in each process, never another builder's kernel."""
    unique = f"<{type(value).__qualname__} at {id(value):#x}>"
    if depth > MAX_DEPTH:
        return unique
    if isinstance(value, torch.Tensor | np.ndarray):
        data = value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else value
        raw = (
            data.reshape(-1).view(torch.uint8).numpy().tobytes()
            if isinstance(data, torch.Tensor)
            else np.ascontiguousarray(data).tobytes()
        )
        kind = "tensor" if isinstance(value, torch.Tensor) else "ndarray"
        return f"{kind}({data.dtype}, {tuple(data.shape)}, {_sha(raw)})"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__}({', '.join(_described(v, depth + 1) for v in value)})"
    if isinstance(value, set | frozenset):
        return (
            f"{type(value).__name__}({', '.join(sorted(_described(v, depth + 1) for v in value))})"
        )
    if isinstance(value, dict):
        items = sorted((str(k), _described(v, depth + 1)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a user's __repr__ may raise anything
        return unique


MAX_DEPTH = 32
"""How deep `_described` follows containers (a dict that holds itself ends here)."""


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _code_reached(thing: Any, module: str, seen: set[int]) -> Iterator[bytes]:
    """A function's or class's code, and that of the functions and classes of the same
    module (`module`, which has no source file) it names, each once: what a notebook's
    builder builds is as often in a class beside it as in the builder."""
    if id(thing) in seen:
        return
    seen.add(id(thing))
    if isinstance(thing, type):
        yield f"class {thing.__qualname__}".encode()
        for base in thing.__bases__:
            yield _described(base).encode()
            if base.__module__ == module:
                yield from _code_reached(base, module, seen)
        for key, value in vars(thing).items():
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            if inspect.isfunction(value) or isinstance(value, type):
                yield key.encode()
                yield from _code_reached(value, module, seen)
            elif not key.startswith("__"):  # a class attribute: a width, a flag
                yield f"{key}={_described(value)}".encode()
        return
    if not inspect.isfunction(thing):
        yield _described(thing).encode()
        return
    yield thing.__qualname__.encode() + _described(thing.__defaults__).encode()
    yield _described(thing.__kwdefaults__).encode()
    names: list[str] = []
    for code in _code_objects(thing.__code__):
        yield code.co_code + b"\0" + repr(code.co_names).encode()
        yield _described([c for c in code.co_consts if not isinstance(c, CodeType)]).encode()
        names += code.co_names
    cells = [cell.cell_contents for cell in thing.__closure__ or () if _filled(cell)]
    for value in [*(thing.__globals__.get(n) for n in names), *cells]:
        if (inspect.isfunction(value) or isinstance(value, type)) and value.__module__ == module:
            yield from _code_reached(value, module, seen)
        elif value is not None and not inspect.ismodule(value):
            yield _described(value).encode()
            if type(value).__module__ == module:  # an instance of a class there: its code
                yield from _code_reached(type(value), module, seen)  # (helper-found)


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    """A code object and those nested in it (a comprehension's, an inner function's)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _unwrapped(builder: Callable[..., Any]) -> Any:
    """The function a `functools.partial` wraps; a callable instance's class."""
    while isinstance(builder, functools.partial):
        builder = builder.func
    if not isinstance(builder, type) and not hasattr(builder, "__qualname__"):
        return type(builder)
    return builder


def source_modules(builder: Callable[..., Any]) -> dict[str, Path]:
    """The modules the digest hashes, by name, with their source files."""
    start = getattr(_unwrapped(builder), "__module__", None) or ""
    path = _origin(start)
    if path is None:
        return {}
    found = {start: path}
    looked_at = {start}  # each name once: most files import torch, typing and the like
    pending = [(start, path)] if _users(path) else []
    while pending:
        name, path = pending.pop()
        for imported in _imports(name, path):
            if imported in looked_at:
                continue
            looked_at.add(imported)
            origin = _origin(imported)
            if origin is not None and _users(origin):
                found[imported] = origin
                pending.append((imported, origin))
    return found


def _imports(name: str, path: Path) -> tuple[str, ...]:
    """Every module an import statement of the file may name: `import a.b` and `from a.b
    import c` name `a` and `a.b` (whose `__init__` files run too) and, if it is one, the
    module `a.b.c`. Parsed once per file and version of it in a process: each builder's walk
    crosses most of Esper's modules, and parsing them for each was a second of every run's
    start."""
    try:
        stat = path.stat()
    except OSError:  # gone since its import
        return ()
    return _parsed_imports(name, path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parsed_imports(name: str, path: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    """`_imports` of the file as it was at `mtime_ns` and `size` (the cache's key)."""
    return tuple(_import_statements(name, path))


def _import_statements(name: str, path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):  # changed or gone since its import
        return
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):  # a relative import beyond the top package
                continue
            yield from _with_parents(base)
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    return (".".join(parts[: i + 1]) for i in range(len(parts)))


def _origin(name: str) -> Path | None:
    """The module's source file, found without importing or running anything (helper-found:
    `importlib.util.find_spec` imports the parent package, so an import under `if
    TYPE_CHECKING:` ran matplotlib's and a user package's `__init__` to make a kernel key)."""
    parts = name.split(".")
    spec = None
    for i in range(len(parts)):
        dotted = ".".join(parts[: i + 1])
        loaded = sys.modules.get(dotted)
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
            file = getattr(loaded, "__file__", None)
            if spec is None and i == len(parts) - 1 and isinstance(file, str):
                # `python script.py`'s __main__: a file without a spec
                return Path(file).resolve() if file.endswith(".py") else None
        else:
            search = None if spec is None else spec.submodule_search_locations
            if i > 0 and search is None:  # the parent is a module, not a package
                return None
            try:
                spec = PathFinder.find_spec(dotted, search)
            except Exception:  # noqa: BLE001 - a path entry it cannot read: not found
                return None
        if spec is None:
            return None
    file = spec.origin if spec is not None else None
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    return Path(file).resolve()


def _users(path: Path) -> bool:
    """Whether the file is the user's code (or Esper's), not a library's."""
    if any(part in LIBRARY_DIRS for part in path.parts):
        return False
    return not any(path.is_relative_to(root) for root in _standard_library())


@functools.cache
def _standard_library() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    return tuple({Path(paths[key]).resolve() for key in ("stdlib", "platstdlib")})


def _installed_version(module: str) -> str | None:
    """The distribution version of the builder's package where it is installed (not the
    user's code): its helper modules are not followed, its version names them."""
    path = _origin(module)
    if path is None or _users(path):
        return None
    top = module.partition(".")[0]
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{distribution} {importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
