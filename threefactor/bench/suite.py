"""Update throughput: the explicit rule against the GEMM floor and PyTorch autograd (``threefactor bench``).

For each backend, dtype, batch size m, layer shape (n_in, n_out) and rule
variant, one run measures, on the same arrays:

``update_s``
    one layer's update through the engine, what :func:`threefactor.local_update`
    computes without its input validation: ``engine.layer_pass`` (forward,
    group statistics, kernels) then ``backend.hebbian(lp.post(), x)`` (third
    factor folded into the post-synaptic term, ΔW = postᵀ x).  grp+div and grp
    have the same update (divisive normalisation only changes the layer's output).
``public_s``
    :func:`threefactor.local_update` on backend arrays (adds input validation).
``gemm``
    the matrix products no implementation of the update can avoid: forward
    x wᵀ (m·n_in·n_out), update postᵀ x (n_out·m·n_in) and kernel v vᵀ
    (m·m·d, d = n_out plain, c grouped).  ``floor_s`` = forward + update;
    ``floor_with_kernel_s`` adds one kernel GEMM.  ``ratio_floor`` = update_s / floor_s.
    ``laplacian_s``: the Laplacian product A v (m·m·d), which the update also needs;
    ``all_s`` = every GEMM of the update (forward, update, kernel, Laplacian) and
    ``ratio_gemms`` = update_s / all_s: how far the update is from the time of its
    own matrix products (the rest is element-wise passes and launches).
``autograd_s``
    PyTorch autograd of the same objective on the same device and dtype
    (:func:`threefactor.verify.torch_ref.objective_torch`, then ``backward()``);
    ``speedup_vs_autograd`` = autograd_s / update_s.  On the CPU timed after ours,
    in a process of its own per thread setting, the fastest setting
    (:func:`threefactor.bench.autograd_child.fill_update_records`,
    ``autograd_own_process``); on a GPU in the same process.  ``autograd_floor_s``: torch's own forward + update
    GEMMs (torch's BLAS may differ from numpy's), for context.
``fastest``
    the same quantities from the fastest repeat instead of the median (on a
    shared machine the minimum is the least disturbed estimate).
``update_graph_s``
    GPU only: the same update captured once into a CUDA graph and replayed
    (no Python launch overhead); a string saying why when capture failed.
``synapses_per_s``
    n_out·n_in / update_s: weight changes ΔW_nm delivered per second (each one
    a sum over the m samples of the batch).
``peak_mem_bytes``
    extra memory of one update: tracemalloc peak on the CPU (numpy buffers;
    not BLAS or Numba-internal scratch), memory-pool growth on the GPU.

With ``--step`` the same run then times one training step of the Table 1 MLP per
backend (:mod:`threefactor.bench.step`: ours vs autograd vs the step's GEMM floor).

Times are medians over repeats after warm-up (see :mod:`threefactor.bench.timing`:
interleaved rounds on the CPU, CUDA events on the GPU).  Results print as a
table and are written as JSON with :func:`threefactor.bench.machine.machine_info`.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import time

import numpy as np

from threefactor.rule import engine
from threefactor.api import local_update
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.bench.machine import blas_threads, machine_info
from threefactor.rule.rules import Rule
from threefactor.bench.timing import TimedBackend, cuda_graph_call, loadavg, peak_memory, time_call, time_interleaved

SCHEMA = "threefactor-bench/1"
BATCHES = (64, 256, 1024)
SHAPES = ((784, 1024), (1024, 1024), (4096, 4096))
#: rule variants: name -> Rule (grp+div's update is grp's: divisive normalisation acts on the output)
VARIANTS = {
    "gauss": Rule(kernel="gaussian"),
    "gauss-grp+div": Rule(kernel="gaussian", groups=32, p=0.2),
    "cossim": Rule(kernel="cosine"),
    "cossim-grp+div": Rule(kernel="cosine", groups=32, p=0.2),
}
DEFAULT_RULES = ("gauss", "gauss-grp+div")
#: other commands' names of the kernels (check's --kernel, train's --rule) -> bench's
RULE_ALIASES = {"gaussian": "gauss", "cosine": "cossim"}
N_CLASSES = 10


# -- the three things measured ---------------------------------------------------------
def _device(be):
    return "cupy" if be.name == "cupy" else "cpu"


def gemm_calls(be, m, n_in, n_out, d, dtype):
    """Callables for the forward, update, kernel and Laplacian GEMMs of one layer on backend ``be``."""
    rng = np.random.default_rng(1)
    x, w, post, v, A = (be.asarray(rng.standard_normal(s).astype(dtype))
                        for s in ((m, n_in), (n_out, n_in), (m, n_out), (m, d), (m, m)))
    vt = be.xp.ascontiguousarray(v.T)      # a plain GEMM: OpenBLAS's SYRK (v @ v.T) is up to 5x slower
    return {"gemm_forward": lambda: be.matmul(x, w.T), "gemm_update": lambda: be.matmul(post.T, x),
            "gemm_kernel": lambda: be.matmul(v, vt), "gemm_laplacian": lambda: be.matmul(A, v)}


def add_heap_argument(parser):
    """``--default-malloc``, the opt-out of :func:`tune_heap` (every benchmark command has it)."""
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc settings alone (by default freed buffers stay in the heap "
                             "for every backend and autograd alike: threefactor.heap)")


def tune_heap(args):
    """:func:`threefactor.heap.keep_freed_memory` unless ``args.default_malloc``; whether it applied."""
    if getattr(args, "default_malloc", False):
        return False
    from threefactor.heap import keep_freed_memory
    return keep_freed_memory()


def set_torch_threads():
    """Give torch the thread count numpy's BLAS uses; returns it, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    n = blas_threads()
    torch.set_num_threads(n)
    return n


def autograd_call(x, w, labels, rule, dtype, device):
    """Callables (autograd step, torch GEMM floor) on ``device``; None without torch.

    The step is forward + loss + backward of objective_torch; the floor is
    torch's own forward and update GEMMs (its BLAS may differ from numpy's).
    """
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    from threefactor.verify.torch_ref import objective_torch

    tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    xt = torch.as_tensor(np.asarray(x), device=device, dtype=tdt)
    wt = torch.as_tensor(np.asarray(w), device=device, dtype=tdt).requires_grad_(True)
    lt = torch.as_tensor(np.asarray(labels), device=device).long()

    pt = torch.ones((x.shape[0], w.shape[0]), device=device, dtype=tdt)

    def step():
        wt.grad = None
        objective_torch(xt, wt, lt, N_CLASSES, rule).backward()

    def floor():                       # torch's own forward + update GEMMs, for context
        with torch.no_grad():
            xt @ wt.T
            pt.T @ xt

    return step, floor


def profile_update(be, rule, x, w, y, repeats=5):
    """Mean seconds per update spent in each primitive (plus ``other``: engine glue), one layer."""
    proxy = TimedBackend(be)
    update = lambda: proxy.hebbian(engine.layer_pass(rule, x, w, y, N_CLASSES, proxy).post(), x)
    update()
    proxy.spent.clear()
    t = time.perf_counter()
    for _ in range(repeats):
        update()
    total = (time.perf_counter() - t) / repeats
    out = {k: v / repeats for k, v in sorted(proxy.spent.items(), key=lambda kv: -kv[1])}
    out["other"] = total - sum(out.values())
    return out


def time_all(fns, device, timing):
    """Medians of every callable: interleaved rounds on the CPU, one by one on the GPU."""
    if device == "cpu":
        return time_interleaved(fns, **timing)
    return {k: time_call(fn, "cuda" if k.startswith(("autograd", "torch")) else device, **timing)
            for k, fn in fns.items()}


def case_arrays(m, n_in, n_out, dtype):
    """The seeded host arrays (x, w, integer labels) of one case (autograd's child makes the same)."""
    rng = np.random.default_rng(0)
    x_h = rng.standard_normal((m, n_in)).astype(dtype)
    w_h = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    return x_h, w_h, rng.integers(0, N_CLASSES, m)


def bench_case(backend, m, n_in, n_out, rule_name, dtype=np.float32, timing=None, autograd=True,
               profile=False):
    """One record of the suite (the keys are documented in the module docstring)."""
    timing = timing or {}
    load = loadavg()
    be = get_backend(backend)
    rule = VARIANTS[rule_name]
    rule.check_width(n_out)
    x_h, w_h, y_h = case_arrays(m, n_in, n_out, dtype)
    x, w, y = be.asarray(x_h), be.asarray(w_h), be.asarray(y_h, dtype=np.int64)
    dev = _device(be)
    kw = dict(kernel=rule.kernel, sigma=rule.sigma, gamma=rule.gamma, activation=rule.activation,
              slope=rule.slope, groups=rule.groups, p=rule.p, delta=rule.delta, backend=be,
              n_classes=N_CLASSES)

    def ours():
        return be.hebbian(engine.layer_pass(rule, x, w, y, N_CLASSES, be).post(), x)

    fns = {"ours": ours, "public": lambda: local_update(x, w, y, **kw),
           **gemm_calls(be, m, n_in, n_out, rule.groups or n_out, dtype)}
    # on the CPU autograd runs in its own process afterwards (run_suite, bench.autograd_child)
    ag = autograd_call(x_h, w_h, y_h, rule, dtype, "cuda") if autograd and dev == "cupy" else None
    if ag is not None:
        fns["autograd"], fns["torch_gemm"] = ag
    t = time_all(fns, dev, timing)
    med = {k: v["median_s"] for k, v in t.items()}
    mem, mem_method = peak_memory(ours, dev)
    gemm = {"forward_s": med["gemm_forward"], "update_s": med["gemm_update"],
            "kernel_s": med["gemm_kernel"], "floor_s": med["gemm_forward"] + med["gemm_update"]}
    gemm["floor_with_kernel_s"] = gemm["floor_s"] + gemm["kernel_s"]
    gemm["laplacian_s"] = med["gemm_laplacian"]
    gemm["all_s"] = gemm["floor_with_kernel_s"] + gemm["laplacian_s"]
    rec = {"backend": be.name, "dtype": np.dtype(dtype).name, "rule": rule_name, "m": m,
           "n_in": n_in, "n_out": n_out, "update_s": med["ours"], "update_iqr_s": t["ours"]["iqr_s"],
           "repeats": t["ours"]["repeats"], "public_s": med["public"],
           "synapses_per_s": n_out * n_in / med["ours"], "peak_mem_bytes": mem,
           "mem_method": mem_method, "gemm": gemm,
           "ratio_floor": med["ours"] / gemm["floor_s"],
           "ratio_floor_with_kernel": med["ours"] / gemm["floor_with_kernel_s"],
           "ratio_gemms": med["ours"] / gemm["all_s"],
           "autograd_s": med.get("autograd"), "autograd_floor_s": med.get("torch_gemm"),
           "autograd_peak_mem_bytes": None, "autograd_own_process": None,
           "loadavg_before": load, "loadavg_after": loadavg(),
           "speedup_vs_autograd": med["autograd"] / med["ours"] if "autograd" in med else None}
    low = {k: v["min_s"] for k, v in t.items()}
    low_floor = low["gemm_forward"] + low["gemm_update"]
    rec["fastest"] = {"update_s": low["ours"], "floor_s": low_floor, "ratio_floor": low["ours"] / low_floor,
                      "autograd_s": low.get("autograd"),
                      "speedup_vs_autograd": low["autograd"] / low["ours"] if "autograd" in low else None}
    if ag is not None and dev == "cupy":
        rec["autograd_peak_mem_bytes"] = peak_memory(ag[0], "cuda")[0]
    rec["update_graph_s"] = None
    if dev == "cupy":
        try:
            rec["update_graph_s"] = time_call(cuda_graph_call(ours), dev, **timing)["median_s"]
        except Exception as exc:  # capture is best effort: record why it failed
            rec["update_graph_s"] = f"capture failed: {type(exc).__name__}: {exc}"[:200]
    if profile:
        rec["profile_s"] = profile_update(be, rule, x, w, y)
    return rec


def usable_backends(names):
    """(the names whose backend loads here, {name: why not} for the others), in the given order."""
    usable, skipped = [], {}
    for name in names:
        try:
            get_backend(name)
        except (BackendUnavailable, ImportError) as exc:   # a module that does not load: unavailable
            skipped[name] = str(exc)
            continue
        usable.append(name)
    return usable, skipped


def check_suite(batches, shapes, rules):
    """ValueError naming the option (--m, --shapes, --rules) when a case of the suite cannot run."""
    for m in batches:
        if m < 2:
            raise ValueError(f"--m: m (batch size) must be >= 2 (a kernel compares pairs), got {m}")
    for n_in, n_out in shapes:
        if n_in < 1 or n_out < 1:
            raise ValueError(f"--shapes: {n_in}x{n_out}: both dimensions must be >= 1")
    for rule in rules:
        if rule not in VARIANTS:
            raise ValueError(f"--rules: {rule!r} is not one of: {', '.join(VARIANTS)}")
        for n_in, n_out in shapes:
            try:
                VARIANTS[rule].check_width(n_out)
            except ValueError as exc:
                raise ValueError(f"--shapes: {n_in}x{n_out} does not suit rule {rule!r}: {exc}") from None


def run_suite(backends, batches, shapes, rules, dtype=np.float32, timing=None, autograd=True,
              log=None, profile=False, torch_settings=None):
    """Every (backend, m, shape, rule) case; returns (records, skipped {backend: reason}).

    ``torch_settings``: autograd's settings on the CPU (default
    :data:`threefactor.bench.autograd_child.SETTINGS`; see ``choose_settings``)."""
    check_suite(batches, shapes, rules)
    usable, skipped = usable_backends(backends)
    records = []
    for name in usable:
        for (n_in, n_out) in shapes:
            for m in batches:
                for rule in rules:
                    rec = bench_case(name, m, n_in, n_out, rule, dtype, timing, autograd, profile)
                    records.append(rec)
                    if log and (name == "cupy" or not autograd):
                        _log_row(log, rec, profile)
    cpu = [r for r in records if r["backend"] != "cupy"]
    if autograd and cpu:
        from threefactor.bench import autograd_child

        if autograd_child.torch_available():
            autograd_child.fill_update_records(cpu, timing, torch_settings or autograd_child.SETTINGS)
        for rec in cpu:
            if log:
                _log_row(log, rec, profile)
    return records, skipped


def _log_row(log, rec, profile):
    log(format_row(rec))
    if profile:
        log("    profile ms: " + ", ".join(f"{k} {v * 1e3:.3f}" for k, v in rec["profile_s"].items()))


# -- output -------------------------------------------------------------------------
HEADER = (f"{'backend':7} {'dtype':7} {'rule':14} {'m':>5} {'n_in x n_out':>12} {'ours ms':>9} "
          f"{'public':>9} {'floor':>9} {'/floor':>6} {'/gemms':>6} {'autograd':>9} {'speedup':>7} {'Gsyn/s':>7} "
          f"{'MiB':>7} {'load':>5}")


def _ms(s):
    return f"{s * 1e3:9.3f}" if s is not None else f"{'-':>9}"


def format_row(r):
    """One line of the table (times in ms; speedup = autograd / ours)."""
    sp = f"{r['speedup_vs_autograd']:7.2f}" if r["speedup_vs_autograd"] else f"{'-':>7}"
    mem = f"{r['peak_mem_bytes'] / 2 ** 20:7.1f}" if r["peak_mem_bytes"] is not None else f"{'-':>7}"
    return (f"{r['backend']:7} {r['dtype']:7} {r['rule']:14} {r['m']:5d} "
            f"{str(r['n_in']) + 'x' + str(r['n_out']):>12} {_ms(r['update_s'])} {_ms(r['public_s'])} "
            f"{_ms(r['gemm']['floor_s'])} {r['ratio_floor']:6.2f} {r.get('ratio_gemms') or 0:6.2f} "
            f"{_ms(r['autograd_s'])} {sp} "
            f"{r['synapses_per_s'] / 1e9:7.2f} {mem} {r['loadavg_before'] or 0:5.1f}")


def default_json_path(kind="update"):
    """benchmarks/results/<date>-<host>[-kind].json under the current directory."""
    day = datetime.date.today().isoformat()
    suffix = "" if kind == "update" else f"-{kind}"
    return os.path.join("benchmarks", "results", f"{day}-{socket.gethostname()}{suffix}.json")


def document(kind, records, settings, skipped=None):
    """The JSON document: schema, command, machine, settings and the records."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):        # python -m threefactor ...
        argv[0] = "threefactor"
    return {"schema": SCHEMA, "kind": kind, "command": " ".join(argv), "machine": machine_info(),
            "settings": settings, "skipped": skipped or {}, "results": records}


def timing_settings(quick, budget=None):
    """Timing keywords for :func:`time_call`: --quick is a smoke test, not a measurement."""
    if quick:
        return {"budget": 0.05 if budget is None else budget, "min_repeats": 3, "warmup": 1}
    return {"budget": 1.0 if budget is None else budget, "min_repeats": 5, "warmup": 2}


#: names that moved out of this module (session 7), still importable from it
_MOVED = {"configure_parser": "threefactor.cli.bench", "run": "threefactor.cli.bench",
          "markdown_summary": "threefactor.cli.bench", "write_json": "threefactor.training.atomic",
          "set_threads": "threefactor.bench.machine"}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
