"""How threefactor's benchmarks time things: warm-up, medians, device sync, peak memory.

* :func:`time_call` — one callable: warm-up, then repeats until a time budget
  and a minimum count; on the GPU, CUDA-event times (``cupyx.profiler.benchmark``
  for CuPy, ``torch.cuda.Event`` for torch).
* :func:`time_interleaved` — several callables on the CPU in rounds (one call
  of each per round, rotating who goes first), so that on a shared, noisy
  machine a load change hits all of them alike and their ratios hold.
* :func:`peak_memory` — extra memory at the peak of one call: tracemalloc on
  the CPU (numpy buffers; BLAS and Numba-internal scratch are not seen), the
  CuPy memory pool's growth, or ``torch.cuda.max_memory_allocated``.
* :func:`cuda_graph_call` — a CuPy callable captured into a CUDA graph.
* :class:`TimedBackend` — a backend proxy that times every primitive call.

Summaries are ``{"median_s", "iqr_s", "min_s", "repeats"}``.  Tests never
assert a time.
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
import tracemalloc

import numpy as np

from threefactor.backends import get_backend


def _summary(times):
    q = np.percentile(times, [25, 50, 75])
    return {"median_s": float(q[1]), "iqr_s": float(q[2] - q[0]), "min_s": float(np.min(times)),
            "repeats": len(times)}


def time_call(fn, device="cpu", budget=1.0, min_repeats=5, warmup=2, max_repeats=10000):
    """Median time of ``fn()`` after ``warmup`` calls; repeats until ``budget`` s and ``min_repeats``.

    ``device``: "cpu" (perf_counter), "cuda" (torch, CUDA events around each call), or a
    backend (object or name, e.g. "cupy") whose :meth:`~threefactor.backends.base.Backend.device_times`
    gives device-side times (CuPy: ``cupyx.profiler.benchmark``, CUDA events; a CPU backend: perf_counter).
    Returns ``{"median_s", "iqr_s", "min_s", "repeats"}``.
    """
    be = _device_backend(device)
    if be is not None:
        times = be.device_times(fn, max_repeats, warmup, budget)
        if times is not None:
            if len(times) < min_repeats:                        # the budget ran out first
                times = be.device_times(fn, min_repeats, 0, float("inf"))
            return _summary(times)
    for _ in range(warmup):
        fn()
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    times, start = [], time.perf_counter()
    with _gc_paused():
        _repeat(fn, device, times, start, budget, min_repeats, max_repeats)
    return _summary(times)


def _repeat(fn, device, times, start, budget, min_repeats, max_repeats):
    """Append the time of each call of ``fn`` to ``times`` until the budget and min_repeats are met."""
    if device == "cuda":
        import torch
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < budget):
        if device == "cuda":
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            fn()
            t1.record()
            t1.synchronize()
            times.append(t0.elapsed_time(t1) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)


def time_interleaved(fns, budget=1.0, min_repeats=5, warmup=2, max_repeats=10000):
    """CPU times of several callables measured in rounds (each called once per round).

    On a shared, noisy machine a load change then hits all of them alike, so
    their ratios stay meaningful.  The order is shuffled every round (seeded):
    a thread pool that spin-waits after its library's call (OpenBLAS, GNU
    OpenMP under torch) slows whatever runs next, and a fixed order would
    always hand that cost to the same candidate.  Returns ``{name: time_call-style summary}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    names = list(fns)
    order = np.random.default_rng(0)
    start, rounds = time.perf_counter(), 0
    with _gc_paused():
        while rounds < max_repeats and (rounds < min_repeats
                                        or time.perf_counter() - start < budget * len(fns)):
            for k in order.permutation(names):
                t = time.perf_counter()
                fns[k]()
                times[k].append(time.perf_counter() - t)
            rounds += 1
    return {k: _summary(v) for k, v in times.items()}


@contextlib.contextmanager
def _gc_paused():
    """Keep the cyclic garbage collector out of the timed loop (as timeit does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def peak_memory(fn, device="cpu"):
    """(extra bytes at the peak of one ``fn()`` call, method) — see the module docstring."""
    be = _device_backend(device)
    grown = be.memory_growth(fn) if be is not None else None
    if grown is not None:
        return grown
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before), "torch.cuda.max_memory_allocated"
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(peak), "tracemalloc peak (numpy buffers)"


class TimedBackend:
    """A backend proxy that adds the (synchronised) time of every primitive call to ``spent``."""

    def __init__(self, be):
        self._be, self.spent = be, {}

    def __getattr__(self, name):
        attr = getattr(self._be, name)
        if not callable(attr) or name in ("asarray", "is_native", "to_numpy", "synchronize"):
            return attr

        def timed(*args, **kwargs):
            t = time.perf_counter()
            out = attr(*args, **kwargs)
            self._be.synchronize()
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t
            return out

        return timed


def cuda_graph_call(fn, backend="cupy"):
    """``fn`` captured once into a CUDA graph by ``backend`` (:meth:`CupyBackend.graph_call`); a
    callable replaying it.  Shows what the update costs without Python's per-kernel launch overhead."""
    return get_backend(backend).graph_call(fn)


def _device_backend(device):
    """The backend behind a ``device`` argument: None for "cpu" and "cuda" (torch), else the backend
    object or the registered backend of that name."""
    if device in ("cpu", "cuda"):
        return None
    return get_backend(device)


def loadavg():
    """1-minute load average (a noisy, shared machine shows here), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
