"""OpenBLAS's own thread-count API, found in this process (the Numba backend switches a small GEMM
to one BLAS thread with it; :mod:`threefactor.bench.machine` reports and sets the count)."""
from __future__ import annotations

import ctypes

_OPENBLAS_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_",
                     "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")
_OPENBLAS_SETTERS = tuple(g.replace("_get_", "_set_") for g in _OPENBLAS_GETTERS)


def _openblas_paths():
    """Paths of the OpenBLAS shared libraries loaded in this process (Linux)."""
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []


def openblas_thread_api():
    """``(get, set)``: OpenBLAS's own C functions for its thread count, or ``None`` without OpenBLAS.

    Each is a ctypes function (``get() -> int``, ``set(n)``); calling them costs a
    microsecond, so a caller may switch threads around a single GEMM.
    """
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for getter, setter in zip(_OPENBLAS_GETTERS, _OPENBLAS_SETTERS):
            get, set_ = getattr(lib, getter, None), getattr(lib, setter, None)
            if get is not None and set_ is not None:
                get.restype = ctypes.c_int
                set_.argtypes, set_.restype = [ctypes.c_int], None
                return get, set_
    return None
