"""A conv net's local training step with the numba backend's conv primitives vs numpy's, in one run.

    python benchmarks/bench_conv_step.py [--rounds 8] [--arch small|vgg] [--batch 128] [--swap pool im2col]

Builds the net (``small``: conv32-pool-conv64-pool-fc256 on Fashion-MNIST-shaped input, 16 groups;
``vgg`` on CIFAR-10-shaped input, 64 groups; Gaussian grp+div) on the numba backend and times
``train_step`` on one random batch, alternating between the backend's own primitives and the numpy
reference's for the ones named by ``--swap`` (``pool``: max_pool_rows and route_rows; ``im2col``),
one swap at a time, median of the rounds.  The heap is kept (threefactor.heap) so that the variants
do not differ in page faults.
"""
import argparse
import time

import numpy as np

from threefactor import get_backend
from threefactor.backends.numba import NumbaBackend
from threefactor.backends.numpy import NumpyBackend
from threefactor.heap import keep_freed_memory
from threefactor.training.train import build_network, resolve_config

SWAPS = {"pool": ("max_pool_rows", "route_rows"), "im2col": ("im2col",)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--arch", choices=("small", "vgg"), default="small")
    ap.add_argument("--batch", type=int, default=None, help="default 128 (small), 32 (vgg)")
    ap.add_argument("--swap", nargs="+", choices=tuple(SWAPS), default=list(SWAPS))
    args = ap.parse_args(argv)
    keep_freed_memory()
    small = args.arch == "small"
    shape = (1, 28, 28) if small else (3, 32, 32)
    m = args.batch or (128 if small else 32)
    cfg = resolve_config(arch=args.arch, dataset="fmnist" if small else "cifar10", rule="gaussian",
                         grouping="grp+div", groups=16 if small else 64, lr_local=0.4, lr_out=5e-3,
                         backend="numba")
    be = get_backend("numba")
    rng = np.random.default_rng(0)
    net = build_network(cfg, shape, 10, be, rng)
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=1e-7,
                               weight_decay_out=1e-6, momentum=0.95, optimizer="sgd")
    x = rng.standard_normal((m,) + shape).astype(np.float32)
    y = rng.integers(0, 10, m)
    own = {name: getattr(NumbaBackend, name) for names in SWAPS.values() for name in names}
    variants = {"numba (all own primitives)": {}}
    for swap in args.swap:
        variants[f"numpy {swap}"] = {name: getattr(NumpyBackend, name) for name in SWAPS[swap]}
    times = {name: [] for name in variants}
    try:
        for _ in range(2):
            net.train_step(x, y, opts, rng)
        for _ in range(args.rounds):
            for name, patch in variants.items():
                for attr, impl in own.items():
                    setattr(NumbaBackend, attr, patch.get(attr, impl))
                t = time.perf_counter()
                net.train_step(x, y, opts, rng)
                times[name].append(time.perf_counter() - t)
    finally:
        for attr, impl in own.items():
            setattr(NumbaBackend, attr, impl)
    print(f"{args.arch}, batch {m}, Gaussian grp+div local step, numba backend, median of {args.rounds}:")
    for name, v in times.items():
        print(f"  {name}: {1e3 * float(np.median(v)):.1f} ms per step")


if __name__ == "__main__":
    main()
