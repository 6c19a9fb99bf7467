"""A conv net's local training step with the Numba pooling kernels vs the numpy pooling passes, in one run.

    python benchmarks/bench_conv_step.py [--rounds 8]

Builds the ``small`` conv net (conv32-pool-conv64-pool-fc256, Gaussian grp+div, 16 groups) on the
numba backend and times ``train_step`` on one random Fashion-MNIST-shaped batch of 128, alternating
between the backend's own pooling primitives and the numpy reference's (median of the rounds).
"""
import argparse
import time

import numpy as np

from threefactor import get_backend
from threefactor.backends.numba import NumbaBackend
from threefactor.backends.numpy import NumpyBackend
from threefactor.train import build_network, resolve_config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    cfg = resolve_config(arch="small", dataset="fmnist", rule="gaussian", grouping="grp+div", groups=16,
                         lr_local=0.4, lr_out=5e-3, backend="numba")
    be = get_backend("numba")
    rng = np.random.default_rng(0)
    net = build_network(cfg, (1, 28, 28), 10, be, rng)
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=1e-7,
                               weight_decay_out=1e-6, momentum=0.95, optimizer="sgd")
    x = rng.standard_normal((128, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    variants = {"numba pooling": (NumbaBackend.max_pool_rows, NumbaBackend.route_rows),
                "numpy pooling": (NumpyBackend.max_pool_rows, NumpyBackend.route_rows)}
    times = {name: [] for name in variants}
    try:
        for _ in range(3):
            net.train_step(x, y, opts, rng)
        for _ in range(args.rounds):
            for name, (pool, route) in variants.items():
                NumbaBackend.max_pool_rows, NumbaBackend.route_rows = pool, route
                t = time.perf_counter()
                net.train_step(x, y, opts, rng)
                times[name].append(time.perf_counter() - t)
    finally:
        NumbaBackend.max_pool_rows, NumbaBackend.route_rows = variants["numba pooling"]
    for name, v in times.items():
        print(f"{name}: median {1e3 * float(np.median(v)):.1f} ms per step")


if __name__ == "__main__":
    main()
