"""Where a sweep's runs execute: a Dask cluster made here, or one that is already running.

Imported only by the sweep (it imports ``dask.distributed``: ``pip install -e ".[sweep]"``).

* CPU (default): a ``LocalCluster`` of worker processes, one thread each (a worker runs one run
  at a time), as many as the cores allow at ``threads_per_run`` BLAS/Numba threads per run.
* GPU runs (``backend = "cupy"``): ``runs_per_gpu`` K worker processes per GPU, each pinned to its
  GPU (``CUDA_VISIBLE_DEVICES``) and holding the resource ``GPU = 1/K``; every GPU run asks for
  ``GPU = 1/K``, so an external cluster whose workers say ``--resources GPU=1`` also runs K per GPU.
* ``scheduler``: the address of a running scheduler (``dask scheduler``, dask-jobqueue, ...).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess

from threefactor.bench.machine import usable_cores


def gpu_count():
    """Number of NVIDIA GPUs here (CuPy, else ``nvidia-smi -L``; 0 when neither finds one)."""
    from threefactor.backends import gpu_count as cupy_gpu_count
    found = cupy_gpu_count()
    if found:
        return found
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            return sum(line.startswith("GPU ") for line in out.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    return 0


def gpu_workers(n_gpus, runs_per_gpu):
    """SpecCluster worker specs: ``runs_per_gpu`` one-thread processes per GPU, resource GPU = 1/K."""
    from distributed import Nanny
    share = 1.0 / runs_per_gpu
    return {f"gpu{g}-{k}": {"cls": Nanny, "options": {
        "nthreads": 1, "resources": {"GPU": share}, "env": {"CUDA_VISIBLE_DEVICES": str(g)}}}
        for g in range(n_gpus) for k in range(runs_per_gpu)}


def task_resources(cfg, runs_per_gpu):
    """Dask resources a run's task asks for: ``{"GPU": 1/K}`` for a CuPy run, else none."""
    if cfg.get("backend") != "cupy":
        return None
    return {"GPU": 1.0 / (runs_per_gpu or 1)}


def cpu_workers(n_runs, workers=None, threads_per_run=1):
    """Worker processes of a local CPU cluster: ``workers``, else cores // threads per run (>= 1),
    never more than there are runs."""
    if workers is None:
        workers = max(1, (usable_cores() or 1) // max(1, threads_per_run))
    return max(1, min(workers, n_runs))


@contextlib.contextmanager
def connect(n_runs, *, scheduler=None, workers=None, threads_per_run=1, gpu=False, runs_per_gpu=None,
            retries=3):
    """A ``distributed.Client`` for the sweep (the cluster made here is closed on exit).

    ``retries``: how often a run whose worker died is started again elsewhere (the scheduler's
    ``allowed-failures``; on an external scheduler its own setting applies).
    """
    import dask
    from distributed import Client, LocalCluster, Scheduler, SpecCluster
    if scheduler is not None:
        client = Client(scheduler, timeout="20s")
        try:
            yield client
        finally:
            client.close()
        return
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.admin.tick.limit": "1h"}):
        if gpu:
            n_gpus = gpu_count()
            if n_gpus == 0:
                raise RuntimeError("the sweep has runs with backend = \"cupy\" but no GPU is visible here; "
                                   "start a cluster on GPU machines and give --scheduler ADDRESS")
            cluster = SpecCluster(workers=gpu_workers(n_gpus, runs_per_gpu or 1),
                                  scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                                  silence_logs=logging.ERROR)
        else:
            n = cpu_workers(n_runs, workers, threads_per_run)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR,
                                   env={"OMP_NUM_THREADS": str(threads_per_run),
                                        "OPENBLAS_NUM_THREADS": str(threads_per_run),
                                        "MKL_NUM_THREADS": str(threads_per_run),
                                        "NUMBA_NUM_THREADS": str(max(threads_per_run, 1)),
                                        "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


def dashboard(client):
    """The dashboard's address, or why there is none."""
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return "no dashboard (pip install bokeh)"
    link = getattr(client, "dashboard_link", None)
    return link or "no dashboard"


def running(client):
    """How many tasks the workers are executing now (those assigned, capped by each worker's threads)."""
    try:
        threads = client.nthreads()
        return sum(min(len(keys), threads.get(w, 1)) for w, keys in client.processing().items())
    except Exception:
        return None
