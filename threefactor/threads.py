"""The library's thread pools, arranged at import so that the default environment runs fast.

On the CPU one update (and one training step) alternates BLAS GEMMs (OpenBLAS's
pthreads) with short Numba passes (the ``omp`` threading layer: GNU OpenMP), and a
user may have PyTorch (its own GNU OpenMP) in the same process.  After each call
every pool keeps its threads spinning for a while: OpenBLAS for 2^28 cycles (about
0.1 s; measured: 30-95 ms of CPU burnt per pair of GEMMs while the process
sleeps), GNU OpenMP for its spin count.  On a machine with few cores the spinning
threads take the cores the next call needs.  The variables
``OPENBLAS_THREAD_TIMEOUT=4`` (sleep after 2^4 cycles) and
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP workers sleep at once) remove that; each
runtime reads them once, when it is loaded or starts its threads.

:func:`configure` (called by ``import threefactor`` before numpy is imported)
therefore sets those two variables for this process where the user has not set
them, and where a runtime was loaded before threefactor it does what can be done:

* OpenBLAS already loaded (the user imported numpy, scipy or torch first): its
  settings are read again (``openblas_read_env``) and its idle threads are
  stopped (``blas_thread_shutdown_``); OpenBLAS starts them again on the next
  threaded call with the short timeout.  Exported by OpenBLAS 0.3 builds
  (numpy's and scipy's wheels included); where either symbol is missing the
  pool is left as it is and :func:`report` says so.
* GNU OpenMP already loaded (the user imported torch first): its wait policy
  cannot change any more.  Left as it is; :func:`report` lists it.  Setting
  ``OMP_WAIT_POLICY=PASSIVE`` before starting Python (or importing threefactor
  before torch) fixes it; ``torch.set_num_threads(1)`` also stops torch's workers.

Thread counts are not changed: BLAS keeps all usable cores for the large GEMMs,
and the Numba backend runs small passes and small GEMMs on the calling thread
(``backends.numba.one_numba_thread``, :func:`blas_threads_at_most`).

``THREEFACTOR_THREADS=keep`` leaves every setting alone (nothing set, nothing
restarted).  The variables set here are inherited by child processes, as
environment variables are.
"""
from __future__ import annotations

import contextlib
import ctypes
import os

#: set THREEFACTOR_THREADS=keep to leave all thread settings alone
OPT_OUT = "THREEFACTOR_THREADS"
#: the settings threefactor gives this process where the user has set none
DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

_OPENBLAS_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_",
                     "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads")
_OPENBLAS_SETTERS = tuple(g.replace("_get_", "_set_") for g in _OPENBLAS_GETTERS)

#: what :func:`configure` did (see :func:`report`)
_STATE = {"configured": False, "set": {}, "kept": {}, "restarted": [], "left": []}


def _loaded_libraries(*needles):
    """Paths of the shared libraries loaded in this process whose name contains a needle (Linux)."""
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if ".so" in line
                           and any(n in line.rsplit("/", 1)[-1].lower() for n in needles)})
    except OSError:
        return []


def _openblas_libraries():
    return _loaded_libraries("openblas")


def _openmp_libraries():
    return _loaded_libraries("libgomp", "libiomp", "libomp")


def configure():
    """Give this process the default thread settings (:data:`DEFAULTS`); idempotent.

    Call before numpy is imported where possible (``threefactor/__init__.py`` does).
    Returns :func:`report`.
    """
    if _STATE["configured"]:
        return report()
    _STATE["configured"] = True
    if os.environ.get(OPT_OUT, "").lower() == "keep":
        _STATE["kept"] = {OPT_OUT: "keep"}
        return report()
    blas_loaded, omp_loaded = _openblas_libraries(), _openmp_libraries()
    for name, value in DEFAULTS.items():
        if name in os.environ:
            _STATE["kept"][name] = os.environ[name]
        else:
            os.environ[name] = value
            _STATE["set"][name] = value
    if "OPENBLAS_THREAD_TIMEOUT" in _STATE["set"]:
        for path in blas_loaded:
            if _restart_openblas(path):
                _STATE["restarted"].append(path)
            else:
                _STATE["left"].append(f"{path}: no openblas_read_env / blas_thread_shutdown_ to restart "
                                      f"its threads with OPENBLAS_THREAD_TIMEOUT=4")
    if "OMP_WAIT_POLICY" in _STATE["set"]:
        _STATE["left"] += [f"{path}: loaded before threefactor, keeps its OpenMP wait policy (set "
                           f"OMP_WAIT_POLICY=PASSIVE before Python starts, or import threefactor first)"
                           for path in omp_loaded]
    return report()


def _restart_openblas(path):
    """Make an already loaded OpenBLAS read its environment again and stop its idle threads."""
    try:
        lib = ctypes.CDLL(path)
        read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
    except (OSError, AttributeError):
        return False
    read_env.restype, shutdown.restype = None, ctypes.c_int
    read_env()
    shutdown()              # OpenBLAS starts its threads again on the next threaded call
    return True


def report():
    """What :func:`configure` did, and the thread pools of this process now.

    ``{"set": {var: value}, "kept": {var: the user's value}, "restarted": [OpenBLAS
    libraries made to re-read the settings], "left": [what could not be changed],
    "pools": threadpoolctl's view ([] without threadpoolctl)}``.
    """
    return {"set": dict(_STATE["set"]), "kept": dict(_STATE["kept"]),
            "restarted": list(_STATE["restarted"]), "left": list(_STATE["left"]), "pools": pools()}


def pools():
    """threadpoolctl's list of this process's thread pools (library, API, threads), or [] without it."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads", "version",
                                   "threading_layer", "filepath")}
            for p in threadpoolctl.threadpool_info()]


thread_report = report


# -- thread counts -------------------------------------------------------------------------
def openblas_thread_api():
    """``(get, set)``: OpenBLAS's own C functions for its thread count, or ``None`` without OpenBLAS.

    Each is a ctypes function (``get() -> int``, ``set(n)``); calling them costs a
    microsecond, so a caller may switch threads around a single GEMM.
    """
    for path in sorted(_openblas_libraries(), key=lambda p: "numpy" not in p):   # numpy's first (scipy has its own)
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


_BLAS_API = []


@contextlib.contextmanager
def blas_threads_at_most(n):
    """Within the block, numpy's OpenBLAS uses at most ``n`` threads (no-op without OpenBLAS's C API)."""
    if not _BLAS_API:
        _BLAS_API.append(openblas_thread_api() or ())
    api = _BLAS_API[0]
    threads = api[0]() if api else n
    if threads <= n:
        yield
        return
    api[1](n)
    try:
        yield
    finally:
        api[1](threads)
