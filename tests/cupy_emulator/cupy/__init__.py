"""A CPU emulation of the part of CuPy that threefactor uses (test infrastructure, not CuPy).

Device arrays are :class:`ndarray` objects whose memory only the emulated device may
read (``numpy.asarray`` on them raises as in CuPy); the numpy-like functions run
numpy on that memory; ``ElementwiseKernel``, ``RawModule`` and ``RawKernel`` compile
their CUDA C++ with g++ against ``_emu/cuda_emu.h`` and run it on the CPU, a block's
threads as fibers with real barriers and warp shuffles.  See ``tests/cupy_emulator/
__init__.py`` for how the tests switch to it and for what is not emulated.
"""
from __future__ import annotations

import numpy as _np

from . import cublas, cuda, linalg  # noqa: F401
from ._emu import device as _device
from ._emu import functions as _functions
from ._emu.array import ndarray  # noqa: F401
from ._emu.elementwise import ElementwiseKernel  # noqa: F401
from ._emu.raw import KernelFault, RawKernel, RawModule  # noqa: F401

__version__ = "13.0.0+threefactor.emulator"
EMULATED = True

globals().update(_functions.namespace())
from ._emu.functions import (array, asanyarray, asarray, ascontiguousarray, asfortranarray,  # noqa: E402,F401
                             asnumpy, bincount, copy, copyto, empty, empty_like, get_array_module,
                             ndim, ravel, shape, size, where)

# dtypes and constants are numpy's, as in CuPy
for _name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
              "float32", "float64", "complex64", "complex128", "intp", "uintp", "byte", "ubyte", "short",
              "ushort", "intc", "uintc", "longlong", "ulonglong", "half", "single", "double", "csingle",
              "cdouble", "dtype", "finfo", "iinfo", "can_cast", "promote_types", "min_scalar_type", "isscalar",
              "issubdtype", "integer", "floating", "inexact", "number", "signedinteger", "unsignedinteger",
              "complexfloating", "generic", "newaxis", "inf", "nan", "pi", "e", "euler_gamma"):
    globals()[_name] = getattr(_np, _name)
int_, float_, complex_ = _np.int64, _np.float64, _np.complex128


def get_default_memory_pool():
    return cuda.memory._default_pool


def get_default_pinned_memory_pool():
    return cuda.memory._default_pinned_pool


def sync_count():
    """(emulator only) How many host synchronisations have happened (see ``_emu/device.py``)."""
    return _device.sync_count()


def sync_log(since=0):
    """(emulator only) Why each host synchronisation from number ``since`` on happened."""
    return _device.sync_log(since)
