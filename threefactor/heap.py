"""Keep a training loop's freed buffers in the process heap (glibc malloc settings).

A CPU training step allocates and frees the same arrays every step: per layer the
activity, f', the group statistics, the post-synaptic term and ΔW, each 1-4 MB for
the Table 1 MLP.  glibc serves such sizes with ``mmap`` until its dynamic threshold has
risen (it rises when a larger mapped chunk is freed, up to 32 MB) and gives freed heap
memory back above a trim threshold of twice that, so how often a step pays fresh page
faults, zero-filling and unmapping (which interrupts the process's other threads,
OpenBLAS's and Numba's) depends on what the process freed before.  A process that only
runs steps keeps paying: on the 2-core VM of ``benchmarks/RESULTS.md`` the MLP step
took 33-34 ms there and 24-25 ms with the settings below (GEMM floor 17-18 ms).  In
``threefactor train`` the evaluation batches have already raised the threshold, and
epoch times were the same with and without them.

:func:`keep_freed_memory` sets the mmap threshold to 64 MiB (per-step buffers come
from the heap; datasets and big im2col matrices are still mapped) and the trim
threshold to 256 MiB (freed buffers stay for the next step), so timings do not depend
on allocation history.  The cost: up to 256 MiB of freed memory stays with the
process.  It changes process-wide settings, so the library never calls it on import;
it calls :func:`keep_for_loops` (once per process) where a loop of steps starts: an
:class:`threefactor.nn.mlp.MLP` on a CPU backend, :func:`threefactor.local_update`
with ``out=``.  ``THREEFACTOR_MALLOC=default`` opts out.  The benchmarks call it too
(``--default-malloc`` to opt out there).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

#: set THREEFACTOR_MALLOC=default to leave glibc's malloc settings alone
OPT_OUT = "THREEFACTOR_MALLOC"
_DONE = []

#: glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); True if applied, False where malloc is not glibc's."""
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2 ** 31:
            raise ValueError(f"{name} must be an int of bytes in (0, 2**31), got {value!r}")
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version                       # glibc only (musl has no mallopt semantics)
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    return bool(mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 and ok)


def keep_for_loops():
    """:func:`keep_freed_memory` once per process, unless ``THREEFACTOR_MALLOC=default``; whether applied."""
    if not _DONE:
        opted_out = os.environ.get(OPT_OUT, "").lower() == "default"
        _DONE.append(False if opted_out else keep_freed_memory())
    return _DONE[0]
