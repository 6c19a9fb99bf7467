#!/usr/bin/env python
"""The online (two-point) rule's per-step weight update against its memory floor.

A step of B streams changes every synapse by R = 2B rank-one terms
(W += lr Σ_r post_rᵀ pre_r, :mod:`threefactor.rule.online`).  The fused update reads
and writes W once, so its floor is a copy of W (same size and dtype, same run).
Candidates, timed interleaved (one call of each per round) on the CPU:

``copy``    ``np.copyto(dst, W)``: read W once, write W once — the floor
``fused``   :func:`threefactor.rule.online.apply_update` as training uses it: the Numba
            pass of ``backends/_online_kernels.py`` for R < BLAS_FROM, in-place BLAS
            GEMM (W ← W + ut·pre) from there on
``numba``   the Numba pass forced for every R (one thread below SERIAL_BELOW, as ``fused``)
``blas``    the in-place BLAS GEMM forced for every R
``numpy``   the reference ``W += lr * (postᵀ pre)`` (forms ΔW, then a second pass)
``step``    a whole :meth:`OnlineLayer.learn` step: forward GEMM, circuit, fused update

synapses/s = n_out · n_in · B / time (synaptic updates per second: every synapse
gets one two-point update per stream).  Usage::

    python benchmarks/bench_online.py                        # 784x1024, 1024x1024, 4096x4096; B = 1, 16, 256
    python benchmarks/bench_online.py --quick --shapes 256x256 --streams 1 16
    python benchmarks/bench_online.py --backend cupy         # on a GPU
"""
import argparse

import numpy as np

from threefactor.bench import suite as bench
from threefactor.cli import bench as bench_cli
from threefactor.training.atomic import write_json
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.rule.online import TwoPointUpdate, apply_update
from threefactor.nn.online_layer import OnlineLayer
from threefactor.rule.rules import Rule

LR = 1e-7          # tiny: W barely moves however often a candidate runs
N_CLASSES = 10


def _numpy_calls(w, upd, lr):
    """The CPU-only candidates: forced Numba pass and forced BLAS GEMM."""
    from scipy.linalg import blas

    from threefactor.backends import _online_kernels as kern
    ut = np.ascontiguousarray((lr * upd.post).T, dtype=w.dtype)
    pre = np.ascontiguousarray(upd.pre, dtype=w.dtype)
    gemm = blas.sgemm if w.dtype == np.float32 else blas.dgemm

    kernel = kern.accumulate_serial if w.size * ut.shape[1] < kern.SERIAL_BELOW else kern.accumulate

    def numba_pass():
        kernel(w, ut, pre)

    def blas_gemm():
        gemm(1.0, pre.T, ut.T, beta=1.0, c=w.T, overwrite_c=True)

    return {"numba": numba_pass, "blas": blas_gemm}


def bench_case(backend, n_in, n_out, streams, dtype, timing, rule):
    be = get_backend(backend)
    xp = be.xp
    rng = np.random.default_rng(0)
    R = 2 * streams
    w = be.asarray(rng.uniform(-1, 1, (n_out, n_in)).astype(dtype) / np.sqrt(n_in))
    dst = xp.empty_like(w)
    upd = TwoPointUpdate(be.asarray(rng.standard_normal((R, n_out)).astype(dtype)),
                         be.asarray(rng.standard_normal((R, n_in)).astype(dtype)))
    layer = OnlineLayer(be.asarray(rng.uniform(-1, 1, (n_out, n_in)).astype(dtype) / np.sqrt(n_in)), rule,
                        streams=streams, n_classes=N_CLASSES, beta=0.01, backend=be)
    xs = be.asarray(rng.standard_normal((8, streams, n_in)).astype(dtype))
    ys = be.asarray(rng.integers(0, N_CLASSES, (8, streams)))
    state = {"t": 0}

    def step():
        t = state["t"] % 8
        layer.learn(xs[t], ys[t], LR)
        state["t"] += 1

    fns = {"copy": lambda: xp.copyto(dst, w), "fused": lambda: apply_update(w, upd, LR)}
    if be.xp is np:
        fns.update(_numpy_calls(w, upd, LR))
    fns["numpy"] = lambda: apply_update(w, upd, LR, fused=False)
    fns["step"] = step
    dev = "cupy" if be.name == "cupy" else "cpu"
    t = {k: v["median_s"] for k, v in bench.time_all(fns, dev, timing).items()}
    syn = n_out * n_in * streams
    rec = {"backend": be.name, "dtype": np.dtype(dtype).name, "n_in": n_in, "n_out": n_out,
           "streams": streams, "R": R, "w_bytes": int(w.nbytes)}
    rec.update({f"{k}_s": v for k, v in t.items()})
    rec.update({f"{k}_synapses_per_s": syn / v for k, v in t.items() if k != "copy"})
    rec["fused_over_copy"] = t["fused"] / t["copy"]
    rec["copy_GBps"] = 2 * w.nbytes / t["copy"] / 1e9
    rec["fused_GBps"] = 2 * w.nbytes / t["fused"] / 1e9
    return rec


def format_row(r):
    def ms(k):
        v = r.get(f"{k}_s")
        return f"{v * 1e3:9.3f}" if v is not None else f"{'-':>9}"
    return (f"{r['backend']:6} {r['n_in']:5d}x{r['n_out']:<5d} {r['streams']:4d} {ms('copy')} {ms('fused')} "
            f"{ms('numba')} {ms('blas')} {ms('numpy')} {ms('step')} {r['fused_over_copy']:7.2f} "
            f"{r['fused_synapses_per_s']:10.3e} {r['step_synapses_per_s']:10.3e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="numba", help="numba (default), numpy or cupy")
    ap.add_argument("--shapes", nargs="+", type=bench_cli._shape, default=[(784, 1024), (1024, 1024), (4096, 4096)],
                    metavar="N_INxN_OUT")
    ap.add_argument("--streams", nargs="+", type=int, default=[1, 16, 256], metavar="B")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--groups", type=int, default=32, help="groups of the rule in the whole step (0: plain)")
    ap.add_argument("--quick", action="store_true", help="smoke test: short budget")
    ap.add_argument("--budget", type=float, default=None, help="seconds per candidate (default 1)")
    ap.add_argument("--json", default=None, help="default benchmarks/results/<date>-<host>-online.json")
    args = ap.parse_args(argv)
    try:
        get_backend(args.backend)
    except BackendUnavailable as exc:
        raise SystemExit(f"bench_online: backend {args.backend} unavailable: {exc}")
    timing = bench.timing_settings(args.quick, args.budget)
    rule = Rule(sigma=5.0, gamma=2.0, groups=args.groups or None, p=0.2)
    settings = {"backend": args.backend, "dtype": args.dtype, "shapes": args.shapes, "streams": args.streams,
                "rule": "gaussian " + (f"grp c={args.groups}" if args.groups else "plain"), "timing": timing,
                "blas_threads": bench.blas_threads(), "lr": LR}
    try:
        import numba
        settings["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    print(f"online update, {args.dtype}, backend {args.backend}; BLAS threads {settings['blas_threads']}, "
          f"numba threads {settings.get('numba_threads')}; times in ms (median)")
    print(f"{'backend':6} {'n_in x n_out':11} {'B':>4} {'copy':>9} {'fused':>9} {'numba':>9} {'blas':>9} "
          f"{'numpy':>9} {'step':>9} {'/copy':>7} {'fused syn/s':>10} {'step syn/s':>10}")
    records = []
    for n_in, n_out in args.shapes:
        for streams in args.streams:
            rec = bench_case(args.backend, n_in, n_out, streams, np.dtype(args.dtype), timing, rule)
            records.append(rec)
            print(format_row(rec), flush=True)
    path = args.json or bench.default_json_path("online")
    write_json(path, bench.document("online", records, settings))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
