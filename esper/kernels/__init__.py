"""Kernels (Tezzeret) and the kernel library (Urza): export, validate, characterise, store, load."""

from esper.kernels.compiler import (
    KernelIntegrityError,
    KernelValidationError,
    compile_kernel,
    instantiate,
    load_artifact,
)
from esper.kernels.library import KernelLibrary, LoadedKernel
from esper.kernels.store import LocalStore, default_store_root

__all__ = [
    "KernelIntegrityError",
    "KernelLibrary",
    "KernelValidationError",
    "LoadedKernel",
    "LocalStore",
    "compile_kernel",
    "default_store_root",
    "instantiate",
    "load_artifact",
]
