#!/usr/bin/env python
"""Strictly sequential online learning (B = 1): samples/s of a training step against its memory floor.

One sample of ``threefactor train --mode online --streams 1`` (the Table 1 MLP, 784-1024-1024-1024-10,
grp+div, dropout, SGD with momentum 0.95 on every layer) runs each hidden layer's forward GEMV, the
circuit (Eq. 59-66), and the SGD step with the two-point update.  Candidates, timed interleaved
(rounds of ``--samples`` samples each, the median round reported):

``fused``     ``MLP.train_step`` as training runs it by default (inside ``Network.deferred_steps``): each
              sample paired with its two previous ones (``--delays 2``), their activity recomputed with
              the current weights (``--refresh-previous``: three rows per layer's forward product), and
              each layer's SGD step (R = 3 rank-one terms) taken at that layer's next forward pass, in the
              same Numba pass over W and its momentum buffer as the next sample's three forward
              products (``_online_kernels.sgd_low_rank_forward``): one pass over each W per sample
``two_pass``  the same rule with the step taken at once (``train_step`` outside ``deferred_steps``): the
              SGD pass (``_online_kernels.sgd_low_rank``), then the next sample's forward product reads
              W again (the default before session 11)
``one_pair``  ``two_pass`` with one pair per sample (``--delays 1``: R = 2; the default before session 10)
``stored``    one pair with the stored previous activity (``--delays 1 --stored-previous``: no more GEMV,
              the circuit as App. C draws it)
``unfused``   the same step with ΔW formed (postᵀ pre, a GEMM) and the optimisers' fused SGD pass after
              it (the path before issue 18)
``floor_w``   the issue's floor: read and write every weight matrix once (``np.copyto`` of each W,
              hidden and output) per sample
``floor_wm``  the floor of SGD with momentum: read and write every W and its momentum buffer once

Per sample the fused step moves 4 W-sized arrays (W and its buffer read and written once), as
floor_wm; two_pass 5 (the forward product reads W once more), floor_w 2.  Usage::

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_online_b1.py
    python benchmarks/bench_online_b1.py --samples 200 --rounds 3 --json out.json
    python benchmarks/bench_online_b1.py --backend cupy       # on a GPU (the fused pass is Numba's: there
                                                              # fused = two_pass + the deferral's bookkeeping)
"""
import argparse
import platform
import time

import numpy as np

from threefactor.backends import get_backend
from threefactor.training.atomic import write_json
from threefactor.training.config import resolve_config
from threefactor.training.train import build_network


def _net(dtype, backend="numba", refresh=True, delays=None):
    more = {} if delays is None else {"delays": delays}
    cfg = resolve_config(mode="online", streams=1, backend=backend, dtype=dtype, refresh_previous=refresh, **more)
    be = get_backend(backend)
    rng = np.random.default_rng(0)
    net = build_network(cfg, 784, 10, be, rng)
    # the rates of the first epoch at B = 1 (per-sample rule: lr / 256 per step)
    opts = net.make_optimizers(cfg["lr_local"] / 256, cfg["lr_out"] / 256, weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"])
    return net, opts, rng


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=300, help="samples per round (default 300)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per candidate (default 5)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="numba", choices=("numba", "numpy", "cupy"),
                   help="the backend the network runs on (default numba; cupy: a GPU, floors as device copies)")
    p.add_argument("--json", default=None, help="write the results here (atomically)")
    p.add_argument("--cpu-time", action="store_true",
                   help="report the process's CPU time per sample, not wall time (a busy shared machine; "
                        "run with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(1)
    be = get_backend(args.backend)
    x = be.asarray(rng.random((args.samples, 784)).astype(args.dtype))     # on the device once, as training has it
    y = be.asarray(rng.integers(0, 10, args.samples))
    nets = {"fused": _net(args.dtype, args.backend), "two_pass": _net(args.dtype, args.backend),
            "one_pair": _net(args.dtype, args.backend, delays=1),
            "stored": _net(args.dtype, args.backend, refresh=False, delays=1), "unfused": _net(args.dtype, args.backend)}
    xp = be.xp

    def no_low_rank(*a, **k):     # the unfused path: the backend fuses no low-rank step, so ΔW is formed
        return False

    weights = [layer.w for layer in nets["fused"][0].hidden] + [nets["fused"][0].output.w]
    dst = [xp.empty_like(w) for w in weights]
    bufs = [xp.empty_like(w) for w in weights]
    nbytes = sum(w.nbytes for w in weights)

    def run(name):
        net, opts, r = nets[name]
        if name == "unfused":
            be.sgd_low_rank_step = no_low_rank          # an instance attribute shadows the method
        try:
            if name == "fused":             # as threefactor train runs an epoch
                with net.deferred_steps(opts):
                    for i in range(args.samples):
                        net.train_step(x[i:i + 1], y[i:i + 1], opts, r)
            else:
                for i in range(args.samples):
                    net.train_step(x[i:i + 1], y[i:i + 1], opts, r)
        finally:
            be.__dict__.pop("sgd_low_rank_step", None)

    def floor_w():
        for _ in range(args.samples):
            for w, d in zip(weights, dst):
                xp.copyto(d, w)

    def floor_wm():
        for _ in range(args.samples):
            for w, d, b in zip(weights, dst, bufs):
                xp.copyto(d, w)
                xp.copyto(b, d)

    cands = {"fused": lambda: run("fused"), "two_pass": lambda: run("two_pass"), "one_pair": lambda: run("one_pair"),
             "stored": lambda: run("stored"),
             "unfused": lambda: run("unfused"),
             "floor_w": floor_w,
             "floor_wm": floor_wm}
    for f in cands.values():        # warm-up: JIT, caches
        f()
    be.synchronize()
    times = {k: [] for k in cands}
    cpu = {k: [] for k in cands}
    for _ in range(args.rounds):
        for k, f in cands.items():
            be.synchronize()
            t, c = time.perf_counter(), time.process_time()
            f()
            be.synchronize()                # a GPU's queued work counts to its candidate
            times[k].append((time.perf_counter() - t) / args.samples)
            cpu[k].append((time.process_time() - c) / args.samples)
    # on a shared machine the process's CPU time is the steadier measure (one thread: wall >= CPU)
    med = {k: float(np.median(v)) for k, v in (cpu if args.cpu_time else times).items()}
    print(f"B = 1, Table 1 MLP online, {args.backend} {args.dtype}; weights {nbytes / 2**20:.1f} MiB; "
          f"{'CPU' if args.cpu_time else 'wall'} time, median of {args.rounds} "
          f"rounds of {args.samples} samples ({platform.processor() or platform.machine()})")
    print(f"{'candidate':10s} {'ms/sample':>10s} {'samples/s':>10s} {'/ floor_w':>10s} {'/ floor_wm':>10s}")
    for k, v in med.items():
        print(f"{k:10s} {v * 1e3:10.3f} {1 / v:10.0f} {v / med['floor_w']:10.2f} {v / med['floor_wm']:10.2f}")
    if args.json:
        write_json(args.json, dict(backend=args.backend, dtype=args.dtype, samples=args.samples, rounds=args.rounds, weight_bytes=nbytes,
                                   seconds_per_sample=med, clock="cpu" if args.cpu_time else "wall",
                                   wall=times, cpu=cpu))
    return med


if __name__ == "__main__":
    main()
