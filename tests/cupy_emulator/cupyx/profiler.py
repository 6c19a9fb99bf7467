"""Emulated ``cupyx.profiler.benchmark``: CPU times, and "GPU" times from the emulated timeline."""
from __future__ import annotations

import math
import time

import numpy as np

from cupy import cuda


class _PerfCaseResult:
    def __init__(self, name, cpu_times, gpu_times):
        self.name = name
        self.cpu_times = np.asarray(cpu_times, dtype=np.float64)
        self.gpu_times = np.asarray(gpu_times, dtype=np.float64).reshape(1, -1)

    def __repr__(self):
        return (f"{self.name}: CPU {self.cpu_times.mean() * 1e6:.1f} us  "
                f"GPU-0 {self.gpu_times.mean() * 1e6:.1f} us (emulated)")


def benchmark(func, args=(), kwargs={}, n_repeat=10000, *, name=None, n_warmup=10, max_duration=math.inf,
              devices=None):
    """Like CuPy's: warm-up, then repeats until ``n_repeat`` or ``max_duration`` seconds."""
    name = name or getattr(func, "__name__", "func")
    for _ in range(n_warmup):
        func(*args, **kwargs)
    cpu, gpu = [], []
    start = time.perf_counter()
    while len(cpu) < n_repeat and time.perf_counter() - start < max_duration:
        e0, e1 = cuda.Event(), cuda.Event()
        e0.record()
        t = time.perf_counter()
        func(*args, **kwargs)
        cpu.append(time.perf_counter() - t)
        e1.record()
        gpu.append(cuda.get_elapsed_time(e0, e1) / 1e3)
    return _PerfCaseResult(name, cpu, gpu)
