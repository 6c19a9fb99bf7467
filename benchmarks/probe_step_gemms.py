"""Time every GEMM of the Table 1 MLP training step inside the step and alone (same shapes, same layouts).

    OPENBLAS_THREAD_TIMEOUT=4 python benchmarks/probe_step_gemms.py

Shows how much slower the unavoidable matrix products run inside the pipeline than in isolation.
"""
import time, numpy as np, collections
from threefactor.training.train import resolve_config, build_network
from threefactor import get_backend
from threefactor.backends.numpy import NumpyBackend
cfg = resolve_config(backend="numba")
be = get_backend("numba"); rng = np.random.default_rng(0)
net = build_network(cfg, 784, 10, be, rng)
opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=1e-7, weight_decay_out=1e-6, momentum=0.95, optimizer="sgd")
X = rng.standard_normal((256, 784)).astype(np.float32); Y = rng.integers(0, 10, 256)
rec = collections.defaultdict(list)
orig = NumpyBackend.matmul
def timed(self, a, b):
    t = time.perf_counter(); r = orig(self, a, b); dt = time.perf_counter() - t
    key = (a.shape, b.shape, a.flags.c_contiguous, b.flags.c_contiguous, a.flags.f_contiguous, b.flags.f_contiguous)
    rec[key].append(dt); return r
for _ in range(5): net.train_step(X, Y, opts, rng)
NumpyBackend.matmul = timed
for _ in range(20): net.train_step(X, Y, opts, rng)
NumpyBackend.matmul = orig
tot = 0
for k, v in sorted(rec.items(), key=lambda kv: -sum(kv[1])):
    med = np.median(v) * 1e3; tot += med * len(v) / 20
    a = np.ones(k[0], np.float32) if k[2] else np.asfortranarray(np.ones(k[0], np.float32))
    b = np.ones(k[1], np.float32) if k[3] else np.asfortranarray(np.ones(k[1], np.float32))
    for _ in range(3): a @ b
    t = time.perf_counter()
    for _ in range(20): a @ b
    iso = (time.perf_counter() - t) / 20 * 1e3
    print(k, "calls/step", len(v) // 20, "median ms", round(med, 2), "isolated ms", round(iso, 2))
print("matmul ms/step", round(tot, 1))
