"""Emulated ``cupy.cuda.driver`` (its error class)."""
from __future__ import annotations


class CUDADriverError(RuntimeError):
    """A CUDA driver error (an invalid launch, a kernel name that is not in the module)."""
