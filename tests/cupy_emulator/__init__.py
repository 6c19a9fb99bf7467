"""A CPU emulation of CuPy, so that the CuPy backend and its CUDA kernels run in the tests.

``THREEFACTOR_EMULATE_CUPY=1 python -m pytest -q -m gpu tests/`` runs every GPU test
against it: ``tests/conftest.py`` calls :func:`install` before any test module
imports ``cupy``, which puts this folder first on ``sys.path``, so that ``import
cupy`` / ``import cupyx`` find the emulated packages here.  ``tests/test_cupy_emulated.py``
does that in a subprocess, so plain ``python -m pytest -q`` (CI) runs them too.

What is emulated (the parts threefactor uses):

* ``cupy.ndarray``: device memory that the host cannot read implicitly (numpy's
  ``asarray`` raises CuPy's TypeError, a host array in device arithmetic raises
  ``Unsupported type``), numpy-like functions, 0-d results, new memory filled with
  NaN, host synchronisations counted (``cupy.sync_count()``, emulator only);
* ``ElementwiseKernel`` with CuPy's rules for types, scalars, broadcasting, ``raw``
  (bounds-checked) and ``size=`` (``cupy/_emu/elementwise.py``), the body compiled by g++;
* ``RawModule`` (name expressions) and ``RawKernel``: the CUDA C++ compiled by g++
  with ``cupy/_emu/cuda_emu.h`` and run block by block, each block's threads as
  fibers with ``__syncthreads``, warp shuffles and votes, dynamic shared memory;
  divergent barriers and shuffles with exited lanes fail; launch limits, argument
  count and types checked; out-of-bounds writes through pointers caught by guard
  zones, out-of-bounds reads read NaN (``cupy/_emu/raw.py``);
* ``cupy.cuda`` (one device, streams and events on a virtual timeline, the memory
  pool's byte counts) and ``cupyx.profiler.benchmark``.

Fibers instead of OS threads: the threads of a block take turns on one OS thread
(a minimal x86-64 context switch), each running until its next barrier.  That is
deterministic, cheap on a 2-core machine, and makes a deadlock a clear error.
``THREEFACTOR_CUPY_EMULATOR_SCHEDULE=forward|reverse|shuffle`` sets the order in
which waiting threads (and the iterations of an ElementwiseKernel) run.

Known gaps against a real GPU: floating point differs in the last bits (glibc's
``expf``/``powf`` instead of CUDA's, no fused multiply-add contraction, numpy's
BLAS instead of cuBLAS, numpy 2 type promotion, which CuPy follows from v14 on);
threads never run concurrently, so a data race is never observed as such (but a
thread runs until its next barrier before any other does, which exposes most
missing ``__syncthreads``); no memory model; warp divergence is only seen at
warp-synchronous calls; ``__shared__`` arrays start zeroed (dynamic shared memory
is filled with 0xFF bytes); streams are not concurrent; CUDA graphs are captured but
not replayed; ``extern "C" {...}`` blocks of kernels are not looked up; and it is
slow: keep the inputs of GPU tests small.
"""
from __future__ import annotations

import os
import pathlib
import sys

#: The environment variable that switches the GPU tests to the emulator.
ENV = "THREEFACTOR_EMULATE_CUPY"
ROOT = pathlib.Path(__file__).resolve().parent


def requested():
    """Whether ``THREEFACTOR_EMULATE_CUPY`` asks for the emulator."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def install():
    """Make ``import cupy`` / ``import cupyx`` load the emulator; returns the emulated ``cupy``."""
    for name in [m for m in sys.modules if m in ("cupy", "cupyx") or m.startswith(("cupy.", "cupyx."))]:
        if not (getattr(sys.modules[name], "__file__", None) or "").startswith(str(ROOT)):
            raise RuntimeError(f"a real {name} is already imported: the emulator must be installed first")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import cupy
    assert getattr(cupy, "EMULATED", False), cupy.__file__
    return cupy


def active():
    """Whether the ``cupy`` module in use is this emulator."""
    return getattr(sys.modules.get("cupy"), "EMULATED", False)
