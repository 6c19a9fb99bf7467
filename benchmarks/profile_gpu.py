#!/usr/bin/env python
"""Where a GPU training step's time goes: launch-bound or kernel-bound, and which kernels.

For each workload (the Table 1 MLP step, the VGG conv step, one plain 4096×4096 update;
ours on CuPy and PyTorch autograd on the same GPU), after a warm-up:

``wall``      wall time per step over N steps queued back to back, one synchronisation at the end
              (what the host spends issuing work, when the GPU keeps up);
``gpu``       the sum of the step's CUDA kernel times and the number of kernels per step, from
              ``torch.profiler`` (CUPTI sees every kernel of the process, CuPy's included);
``kernels``   the top kernels by total GPU time;
``python``    (ours) the top Python functions by own time, from cProfile.

First, an A/B of the switchable kernel choices (:func:`ab_choices`), timed side by side.

If wall ≫ gpu the step is launch-bound (host overhead): fewer, larger kernels or graph replay
help; if wall ≈ gpu, the kernels listed are where the time goes.  Needs CuPy, PyTorch with
CUDA and a GPU.  Usage::

    python benchmarks/profile_gpu.py --steps 20 --json out.json
"""
import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_conv_epoch as conv  # noqa: E402

from threefactor.bench import suite as bench  # noqa: E402
from threefactor.training.atomic import write_json  # noqa: E402
from threefactor.bench import step as mlp  # noqa: E402
from threefactor.backends import get_backend  # noqa: E402
from threefactor.bench.machine import machine_info  # noqa: E402


def _sync():
    import cupy
    import torch

    cupy.cuda.Device().synchronize()
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def wall_per_step(fn, steps):
    """Seconds per call of ``fn`` over ``steps`` calls queued back to back (one sync at the end)."""
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync()
    return (time.perf_counter() - t0) / steps


def kernel_profile(fn, steps, top=15):
    """(GPU kernel seconds per step, kernels per step, top kernels) of ``steps`` calls, via torch.profiler."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = torch.cuda.is_available()   # without one (a dry run) the CPU ops stand in for kernels
    _sync()
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
        _sync()
    rows = {}
    for ev in prof.events():
        if gpu and ev.device_type == torch.autograd.DeviceType.CPU:
            continue
        name = ev.name[:90]
        t, n = rows.get(name, (0.0, 0))
        rows[name] = (t + ev.time_range.elapsed_us() * 1e-6, n + 1)
    total = sum(t for t, _ in rows.values())
    count = sum(n for _, n in rows.values())
    best = sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]
    return total / steps, count / steps, [{"kernel": k, "ms_per_step": t / steps * 1e3, "calls_per_step": n / steps}
                                          for k, (t, n) in best]


def python_profile(fn, steps, top=15):
    """Top Python functions by own time over ``steps`` calls (cProfile), as text."""
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(steps):
        fn()
    _sync()
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _event_ms(fn, repeats=20):
    """Median GPU time of ``fn`` in ms (threefactor.bench.timing: CUDA events, 3 warm-up calls)."""
    return bench.time_call(fn, "cupy", budget=0.0, min_repeats=repeats, warmup=3)["median_s"] * 1e3


def ab_choices(small=False):
    """Switchable kernel choices timed side by side (A/B in one run): im2col with one kernel offset
    per block or all of them; the Gram matrix of the Gaussian kernel by SYRK or by GEMM, or its lower
    triangle by 1, 2 or 4 row stripes."""
    import cupy

    from threefactor.backends import _conv_cupy
    from threefactor.backends.cupy import CupyBackend
    from threefactor.rule.conv import im2col

    rng = np.random.default_rng(0)
    rows = []
    default_offsets, default_syrk = _conv_cupy.IM2COL_ALL_OFFSETS, CupyBackend.use_syrk
    shapes = [(4, 8, 8, 8)] if small else [(128, 128, 32, 32), (128, 256, 16, 16), (128, 512, 8, 8)]
    for m, c, h, w in shapes:
        x = cupy.asarray(rng.standard_normal((m, c, h, w)).astype(np.float32))
        for flag in (False, True):
            _conv_cupy.IM2COL_ALL_OFFSETS = flag
            rows.append({"what": f"im2col {m}x{c}x{h}x{w} 3x3", "choice": f"all_offsets={flag}",
                         "ms": _event_ms(lambda: im2col(x, 3, 3, 1, cupy))})
    _conv_cupy.IM2COL_ALL_OFFSETS = default_offsets
    be = CupyBackend()
    for m, d in ([(16, 32)] if small else [(256, 1024), (1024, 4096), (128, 131072)]):
        v = cupy.asarray(rng.standard_normal((m, d)).astype(np.float32))
        for flag in (True, False):
            be.use_syrk = flag
            rows.append({"what": f"gaussian_kernel m={m} d={d}", "choice": f"syrk={flag}",
                         "ms": _event_ms(lambda: be.gaussian_kernel(v, 5.0))})
    be.use_syrk = default_syrk
    # The Gram matrix's lower triangle by row stripes (stripe i: rows of block i against blocks 0..i),
    # (k + 1) / 2k of a full GEMM's flops: worth a kernel that reads stripes if the smaller GEMMs keep
    # cuBLAS's speed (measured only: the backend takes the full GEMM).
    for m, d in ([(16, 32)] if small else [(1024, 4096), (256, 1024)]):
        v = cupy.asarray(rng.standard_normal((m, d)).astype(np.float32))
        for k in (1, 2, 4):
            b = m // k
            rows.append({"what": f"gram m={m} d={d}", "choice": f"stripes={k}",
                         "ms": _event_ms(lambda: [v[i * b:(i + 1) * b] @ v[:(i + 1) * b].T for i in range(k)])})
    return rows


def workloads(which, device="cuda", small=False):
    """name -> (ours closure, {torch variant: closure}); ``small``: tiny shapes for a dry run."""
    import torch

    hidden, m = ((64, 64), 16) if small else ((1024, 1024, 1024), 256)
    arch, batch, n = ("conv8-pool-fc32", 4, 128) if small else ("vgg", 128, 4096)

    found = {}
    if "mlp" in which:
        be = get_backend("cupy")
        rule = mlp.make_rule(8 if small else 32)
        x_h, y_h = mlp.batch(m, np.float32)
        found["mlp"] = (mlp.ours_call(be, hidden, rule, x_h, y_h, np.float32),
                        {"autograd": mlp.torch_call(hidden, rule, x_h, y_h, np.float32, device)})
    if "vgg" in which:
        cfg, net, rng = conv.make_net(arch, 1, 4 if small else None, "cupy")
        data = np.random.default_rng(1)
        x_h = data.standard_normal((batch,) + conv.IMAGE).astype(cfg["dtype"])
        y_h = data.integers(0, conv.N_CLASSES, batch)
        step = conv.torch_call(cfg, net, x_h, y_h, device)

        def with_tf32(flag):
            def run():
                old = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = flag
                try:
                    step()
                finally:
                    torch.backends.cudnn.allow_tf32 = old
            return run

        found["vgg"] = (conv.ours_call(cfg, net, rng, x_h, y_h),
                        {"autograd_fp32": with_tf32(False), "autograd_tf32": with_tf32(True)})
    if "update" in which:
        from threefactor.rule import engine
        from threefactor.bench.suite import VARIANTS, N_CLASSES
        be = get_backend("cupy")
        rule = VARIANTS["gauss"]
        rng = np.random.default_rng(0)
        x = be.asarray(rng.standard_normal((n // 4, n)).astype(np.float32))
        w = be.asarray((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32))
        y = be.asarray(rng.integers(0, N_CLASSES, n // 4), dtype=np.int64)
        found["update"] = (lambda: be.hebbian(engine.layer_pass(rule, x, w, y, N_CLASSES, be).post(), x), {})
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", nargs="+", default=["mlp", "vgg", "update"], choices=("mlp", "vgg", "update"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default=None)
    ap.add_argument("--torch-device", default="cuda", help="cpu for a dry run without a GPU")
    ap.add_argument("--small", action="store_true", help="tiny shapes: a dry run (e.g. on the CuPy emulator)")
    args = ap.parse_args(argv)
    report = {"machine": machine_info(), "command": " ".join(sys.argv), "workloads": {}}
    report["ab"] = ab_choices(args.small)
    for row in report["ab"]:
        print(f"== A/B {row['what']:32} {row['choice']:18} {row['ms']:8.3f} ms", flush=True)
    for name, (ours, others) in workloads(args.which, args.torch_device, args.small).items():
        rec = {}
        for label, fn in [("ours", ours), *others.items()]:
            for _ in range(3):
                fn()
            wall = wall_per_step(fn, args.steps)
            gpu, count, top = kernel_profile(fn, max(3, args.steps // 4))
            rec[label] = {"wall_ms": wall * 1e3, "gpu_ms": gpu * 1e3, "kernels_per_step": count, "top": top}
            print(f"== {name} / {label}: wall {wall * 1e3:.3f} ms/step, GPU kernels {gpu * 1e3:.3f} ms/step, "
                  f"{count:.0f} kernels/step", flush=True)
            for row in top:
                print(f"   {row['ms_per_step']:8.3f} ms  x{row['calls_per_step']:<5.1f} {row['kernel']}")
            if label == "ours":
                text = python_profile(fn, max(3, args.steps // 4))
                rec[label]["python"] = text
                print(text, flush=True)
        report["workloads"][name] = rec
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
