"""Kernels (Tezzeret) and the kernel library (Urza): export, validate, characterise, store, load."""

from esper.kernels.cache import ByteLRU
from esper.kernels.compiler import (
    KernelIntegrityError,
    KernelValidationError,
    compile_kernel,
    instantiate,
    load_artifact,
)
from esper.kernels.integrity import CompileMachineryError, UnsafeArtifactError
from esper.kernels.library import KernelLibrary, KernelRequest, LoadedKernel
from esper.kernels.local_store import LocalStore
from esper.kernels.s3_store import S3Store, StoreUnavailableError
from esper.kernels.store import KernelStore, StoredKernel, default_store_root

__all__ = [
    "ByteLRU",
    "CompileMachineryError",
    "KernelRequest",
    "KernelStore",
    "S3Store",
    "StoreUnavailableError",
    "StoredKernel",
    "KernelIntegrityError",
    "KernelLibrary",
    "KernelValidationError",
    "LoadedKernel",
    "LocalStore",
    "UnsafeArtifactError",
    "compile_kernel",
    "default_store_root",
    "instantiate",
    "load_artifact",
]
