"""Default against tuned environment: the update and the MLP step, each in a fresh child process.

A user who installs threefactor and calls it gets the *default* environment:
no thread variables set, glibc's malloc as it comes.  The *tuned* environment
adds ``OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=PASSIVE`` (thread pools that
sleep instead of spinning after each call).  :func:`compare` runs the same
measurement in one child process per environment, interleaved (default,
tuned, tuned, default, ...), several times, and reports per environment the
ratios measured inside each child, where a load change on a shared machine
hits numerator and denominator alike:

``grpdiv/floor``
    :func:`threefactor.local_update` (public call, numpy arrays in), Gaussian
    grp+div (c = 32), over its GEMM floor: forward x wᵀ + update postᵀ x +
    kernel v vᵀ (m × m × c).
``plain/gemms``
    the plain Gaussian update over its own GEMMs: forward, update, kernel
    v vᵀ (m × m × n_out) and Laplacian A v (m × m × n_out).
``public/engine``, ``out/engine``
    the grp+div public call (validation, conversion, result allocation), and the same with
    ``out=``, over the engine alone (``engine.layer_pass`` then ``backend.hebbian``).
``step/floor``
    :meth:`threefactor.nn.mlp.MLP.train_step` of the Table 1 MLP
    (:mod:`threefactor.bench.step`) over the step's forward and weight-gradient GEMMs.

The children import nothing before threefactor (as a script that starts with
``import threefactor`` would) unless ``first`` names a module to import
before it (``numpy`` or ``torch``: the case where the library arrives late).

Usage (``benchmarks/bench_env.py`` is the script)::

    python benchmarks/bench_env.py --repeats 3
    python -m threefactor.bench.envs --child default     # one child, JSON on stdout
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from threefactor.bench.machine import TUNED, clean_environment  # noqa: F401  (their home is machine)

#: ratios reported, in order
RATIOS = ("grpdiv/floor", "plain/gemms", "step/floor", "public/engine", "out/engine")


def measure(m=256, n=1024, budget=1.0, step=True, first=None):
    """The child's measurement: times (s) and the three ratios, as a JSON-ready dict."""
    if first:
        __import__(first)
    import numpy as np

    import threefactor as tf
    from threefactor.backends import get_backend
    from threefactor.bench import step as bench_step
    from threefactor.bench.suite import gemm_calls
    from threefactor.bench.timing import time_interleaved
    from threefactor.rule import engine

    be = get_backend("numba")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, n)).astype(np.float32)
    w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    y = rng.integers(0, 10, m)
    grp = dict(kernel="gaussian", groups=32, p=0.2, backend="numba", n_classes=10)
    plain = dict(kernel="gaussian", backend="numba", n_classes=10)
    g32, gn = gemm_calls(be, m, n, n, 32, np.float32), gemm_calls(be, m, n, n, n, np.float32)
    rule = tf.Rule(kernel="gaussian", groups=32, p=0.2)
    out = np.empty_like(w)
    fns = {"grpdiv": lambda: tf.local_update(x, w, y, **grp),
           "grpdiv_out": lambda: tf.local_update(x, w, y, out=out, **grp),
           "grpdiv_engine": lambda: be.hebbian(engine.layer_pass(rule, x, w, y, 10, be).post(), x),
           "plain": lambda: tf.local_update(x, w, y, **plain),
           "gemm_forward": g32["gemm_forward"], "gemm_update": g32["gemm_update"],
           "gemm_kernel32": g32["gemm_kernel"], "gemm_kernel": gn["gemm_kernel"],
           "gemm_laplacian": gn["gemm_laplacian"]}
    if step:
        rule = bench_step.make_rule(32)
        xs, ys = bench_step.batch(m, np.float32)
        fns["step"] = bench_step.ours_call(be, [n] * 3, rule, xs, ys, np.float32)
        fns["step_floor"] = bench_step.floor_calls(be, [n] * 3, m, np.float32)
    res = time_interleaved(fns, budget=budget, min_repeats=5, warmup=3)
    t = {k: v["median_s"] for k, v in res.items()}
    floor = t["gemm_forward"] + t["gemm_update"]
    ratios = {"grpdiv/floor": t["grpdiv"] / (floor + t["gemm_kernel32"]),
              "plain/gemms": t["plain"] / (floor + t["gemm_kernel"] + t["gemm_laplacian"])}
    ratios["public/engine"] = t["grpdiv"] / t["grpdiv_engine"]
    ratios["out/engine"] = t["grpdiv_out"] / t["grpdiv_engine"]
    if step:
        ratios["step/floor"] = t["step"] / t["step_floor"]
    from threefactor.threads import thread_report
    return {"times_s": t, "ratios": ratios, "threads": thread_report(),
            "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def run_child(tuned, budget=1.0, step=True, first=None, extra_env=None, timeout=600, realtime=False):
    """One child process's :func:`measure` under the default (or tuned) environment.

    ``realtime``: run it under ``chrt -f 50`` (SCHED_FIFO, Linux, root): on a machine busy with
    other work the child then preempts it, and the kernel's RT throttling still leaves others 5 %.
    """
    cmd = (["chrt", "-f", "50"] if realtime else []) + [sys.executable, "-m", "threefactor.bench.envs", "--child", "tuned" if tuned else "default",
           "--budget", str(budget)]
    if not step:
        cmd.append("--no-step")
    if first:
        cmd += ["--first", first]
    env = clean_environment(tuned, extra_env)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child ({'tuned' if tuned else 'default'}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: the extra child of ``compare(..., library_off=True)``: default environment, the library's own settings off
LIBRARY_OFF = {"THREEFACTOR_THREADS": "keep", "THREEFACTOR_MALLOC": "default"}


def compare(repeats=3, budget=1.0, step=True, first=None, realtime=False, library_off=False, log=print):
    """Children default, tuned, tuned, default, ... (``repeats`` of each); their ratios per environment.

    ``library_off``: a third child per round, the default environment with threefactor's own
    thread and heap settings switched off (:data:`LIBRARY_OFF`): what a user got before them.
    Returns ``{"default": [child results], "tuned": [...], "summary": {env: {ratio: (min, max)}}}``
    plus ``"default/tuned"``: for each round, default's time over tuned's (1.0 = as fast).
    """
    variants = {"default": (False, None), "tuned": (True, None)}
    if library_off:
        variants["library-off"] = (False, LIBRARY_OFF)
    runs = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            tuned, extra = variants[name]
            res = run_child(tuned, budget, step, first, extra, realtime=realtime)
            runs[name].append(res)
            log(f"round {r + 1} {name:11} " + "  ".join(f"{k} {v:.3f}" for k, v in res["ratios"].items())
                + f"  (update grp+div {res['times_s']['grpdiv'] * 1e3:.2f} ms"
                + (f", step {res['times_s']['step'] * 1e3:.1f} ms" if step else "")
                + f", load {res['loadavg']:.1f})")
    names = [k for k in RATIOS if k in runs["default"][0]["ratios"]]
    summary = {env: {k: (min(x["ratios"][k] for x in rs), max(x["ratios"][k] for x in rs)) for k in names}
               for env, rs in runs.items()}
    keys = {"grpdiv/floor": "grpdiv", "plain/gemms": "plain", "step/floor": "step"}
    rel = {keys[k]: [d["times_s"][keys[k]] / t["times_s"][keys[k]] for d, t in zip(runs["default"], runs["tuned"])]
           for k in names if k in keys}
    return {**runs, "summary": summary, "default/tuned": rel}


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="one child of the default-vs-tuned benchmark")
    ap.add_argument("--child", choices=("default", "tuned"), required=True)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--no-step", action="store_true")
    ap.add_argument("--first", choices=("numpy", "torch"), default=None)
    args = ap.parse_args(argv)
    print(json.dumps(measure(budget=args.budget, step=not args.no_step, first=args.first)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
