"""What machine a benchmark ran on: CPU, cores, BLAS and its threads, GPU, library versions, date.

:func:`machine_info` returns a JSON-ready dict that :mod:`threefactor.bench`
stores next to every measurement, so that numbers are never quoted without
the hardware that produced them.  Everything here is best effort: a field
that cannot be found is ``None``, never an exception.
"""
from __future__ import annotations

import datetime
import importlib
import os
import platform
import socket

from threefactor.backends import gpu_info as _gpu_info
from threefactor.backends import set_compute_threads
from threefactor.threads import openblas_thread_api  # noqa: F401  (its home is threads)
from threefactor.threads import report as threads_report

_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def usable_cores():
    """Number of cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _openblas_threads():
    """Threads of the OpenBLAS loaded in this process, asked through its own C API."""
    api = openblas_thread_api()
    return None if api is None else int(api[0]())


def blas_info():
    """BLAS library, version, thread count and kernels (``architecture``: the core type whose kernels
    OpenBLAS picked, e.g. "Haswell"; None where unknown) that numpy uses.

    Uses threadpoolctl when installed (numpy's own library where several are loaded, e.g. scipy's
    OpenBLAS beside numpy's); otherwise ``numpy.show_config`` for the name and OpenBLAS's own
    ``openblas_get_num_threads`` (or the usual environment variables, or the usable cores) for the threads.
    """
    import numpy as np

    try:
        import threadpoolctl

        pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            p = next((p for p in pools if "numpy" in str(p.get("filepath", ""))), pools[0])
            return {"name": p.get("internal_api"), "version": p.get("version"),
                    "threads": p.get("num_threads"), "architecture": p.get("architecture"),
                    "source": "threadpoolctl"}
    except ImportError:
        pass
    name = version = None
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        name, version = blas.get("name"), blas.get("version")
    except (TypeError, ValueError, AttributeError):  # numpy < 1.26 has no mode="dicts"
        pass
    threads, source = _openblas_threads(), "openblas_get_num_threads"
    if threads is None:
        env = [os.environ[k] for k in _THREAD_ENV if os.environ.get(k, "").isdigit()]
        threads, source = (int(env[0]), "environment") if env else (usable_cores(), "usable cores")
    return {"name": name, "version": version, "threads": threads, "architecture": None, "source": source}


def set_threads(n):
    """Use ``n`` threads in numpy's BLAS (OpenBLAS's own setter, or threadpoolctl) and in Numba.

    Returns what was set, e.g. ``{"blas": 1, "numba": 1}`` (a library that
    cannot be set is left out).  torch is set by the benchmarks from
    :func:`blas_threads` so that all three agree.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    done = {}
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(n, user_api="blas")
        done["blas"] = n
    except ImportError:
        api = openblas_thread_api()
        if api is not None:
            api[1](n)
            done["blas"] = n
    done.update(set_compute_threads(n))
    return done


def blas_threads():
    """Number of threads numpy's BLAS uses (see :func:`blas_info`)."""
    return blas_info()["threads"] or usable_cores() or 1


def busy_machine_note(threads=None, load=None, cores=None):
    """A one-line hint when other processes keep cores busy while BLAS uses all of them, else None.

    OpenBLAS splits each large GEMM over its threads and waits for the slowest: with
    one of two cores taken by another process, the Table 1 MLP step measured 108 ms
    on two BLAS threads and 41 ms on one (``benchmarks/RESULTS.md``).  The 1-minute
    load average is the (coarse) sign: at or above the number of BLAS threads.
    """
    threads = blas_threads() if threads is None else threads
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    if threads < 2 or load < threads:
        return None
    return (f"note: load average {load:.1f} on {cores} cores while BLAS uses {threads} threads: if other "
            f"processes are busy, each GEMM waits for them (a training step can run several times slower); "
            f"OPENBLAS_NUM_THREADS={max(1, threads - round(load - threads + 1))} may be faster")


def gpu_note(info=None):
    """A one-line hint that a GPU is usable through CuPy (for runs on a CPU backend), else None."""
    info = gpu_info() if info is None else info
    if not info:
        return None
    return (f"note: a GPU is usable here ({info['name']}, {info['memory_gib']} GiB): --backend cupy trains "
            f"on it (benchmarks/RESULTS.md, \"GPU\": a VGG step 12 ms on an H200)")


def gpu_info():
    """Name, memory and CUDA versions of GPU 0 through CuPy, or ``None`` without one
    (:func:`threefactor.backends.gpu_info`)."""
    return _gpu_info()


#: environment variables that change how the thread pools behave (spin-waiting, counts)
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
              "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")


def scheduling():
    """This process's scheduling policy and priority, e.g. ``"SCHED_FIFO 50"`` under ``chrt -f 50``."""
    try:
        policy = os.sched_getscheduler(0)
        names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH",
                                             "SCHED_IDLE") if hasattr(os, n)}
        return f"{names.get(policy, policy)} {os.sched_getparam(0).sched_priority}"
    except (AttributeError, OSError):
        return None


def _version(module):
    try:
        return importlib.import_module(module).__version__
    except Exception:
        return None


def machine_info():
    """A JSON-ready description of this machine and of the libraries the benchmarks use."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "blas": blas_info(),
        "gpu": gpu_info(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "threads_configured": {k: v for k, v in threads_report().items() if k != "pools"},
        "scheduling": scheduling(),
        "versions": {m: _version(m) for m in ("numpy", "numba", "torch", "cupy", "threefactor")},
    }


#: the variables of the tuned environment
TUNED = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}


def clean_environment(tuned=False, extra=None):
    """``os.environ`` without any thread or malloc variable; with ``tuned``, :data:`TUNED` added."""
    from threefactor.threads import OPT_OUT

    from threefactor.heap import OPT_OUT as HEAP_OPT_OUT

    drop = set(THREAD_ENV) | set(TUNED) | {OPT_OUT, HEAP_OPT_OUT, "GOMP_SPINCOUNT", "KMP_BLOCKTIME"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MALLOC_")}
    if tuned:
        env.update(TUNED)
    env.update(extra or {})
    return env
