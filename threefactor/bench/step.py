"""One training step of the Table 1 MLP: ours vs PyTorch autograd vs the step's GEMM floor.

The network (Sec. 4.2, App. D.4-D.5): 784 -> 1024 -> 1024 -> 1024 -> 10, batch
256, Gaussian kernel grp+div (c = 32 groups, p = 0.2, δ = 1, σ = 5, γ = 2),
leaky ReLU 0.01, dropout 0.01, SGD with momentum 0.95 and weight decay.

``ours``
    :meth:`threefactor.nn.mlp.MLP.train_step` with ``learning="local"``: each
    hidden layer's explicit 3-factor update (engine.local_step) and its SGD step
    during the forward pass, then the output layer's cross-entropy step.
``autograd``
    the same network and rule in PyTorch, as autograd-based implementations
    train it: per hidden layer the objective of
    :func:`threefactor.verify.torch_ref.objective_torch` (built from its own pieces so
    that z = f(x wᵀ) is computed once and also gives the layer output), the
    output passed on detached (layer-local losses, no gradient between
    layers), the output layer's cross-entropy, one ``backward()`` over the sum
    and one ``torch.optim.SGD`` step.  On the CPU it is timed in its own process at its
    best settings, alternating with ours (:mod:`threefactor.bench.autograd_child`;
    ``speedup_vs_autograd`` = its median over ours timed in the same rounds); on a GPU
    in the same process with CUDA events.
``floor``
    the GEMMs the step cannot avoid: per layer the forward x wᵀ and the
    weight-gradient postᵀ x (hidden and output layers), timed alone.

samples/s = batch / median step time; ``fastest`` holds the same from the fastest repeat.  Usage::

    threefactor bench --step                              # the update suite, then this step
    python benchmarks/bench_step.py                       # this step alone: numpy, numba (+ cupy on a GPU)
    python benchmarks/bench_step.py --backend numba --budget 5 --json out.json
"""
import argparse

import numpy as np

from threefactor.bench import suite as bench
from threefactor.training.atomic import write_json
from threefactor.backends import BACKENDS, get_backend
from threefactor.cli.main import HelpFormatter, at_least, output_file, writable_file_problem
from threefactor.bench.machine import set_threads
from threefactor.bench.autograd_child import choose_settings
from threefactor.bench.timing import time_call
from threefactor.nn.mlp import MLP
from threefactor.rule.rules import Rule

N_IN, N_CLASSES = 784, 10
LR_LOCAL, LR_OUT, MOMENTUM, WD_LOCAL, WD_OUT, DROPOUT = 1e-3, 1e-2, 0.95, 1e-7, 1e-6, 0.01


def make_rule(groups):
    return Rule(kernel="gaussian", sigma=5.0, gamma=2.0, activation="lrelu", slope=0.01,
                groups=groups, p=0.2, delta=1.0)


def batch(m, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((m, N_IN), dtype=np.float64).astype(dtype), rng.integers(0, N_CLASSES, m)


def ours_call(be, hidden, rule, x_h, y_h, dtype):
    """A closure running one local-learning train_step of the MLP on backend ``be``."""
    rng = np.random.default_rng(0)
    net = MLP(N_IN, hidden, N_CLASSES, rule, divisive=True, learning="local", dropout=DROPOUT,
              backend=be, dtype=dtype, rng=rng)
    opts = net.make_optimizers(LR_LOCAL, LR_OUT, weight_decay_local=WD_LOCAL,
                               weight_decay_out=WD_OUT, momentum=MOMENTUM)
    x, y = be.asarray(x_h), be.asarray(y_h, dtype=np.int64)
    return lambda: net.train_step(x, y, opts, rng)


def torch_call(hidden, rule, x_h, y_h, dtype, device):
    """A closure running one autograd training step of the same network in PyTorch."""
    import torch
    import torch.nn.functional as F

    from threefactor.verify import torch_ref as tr

    tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    gen = torch.Generator().manual_seed(0)
    sizes = [N_IN, *hidden]

    def uniform(*shape, fan_in):
        b = 1.0 / np.sqrt(fan_in)
        return ((torch.rand(*shape, generator=gen, dtype=tdt) * 2 - 1) * b).to(device).requires_grad_(True)

    ws = [uniform(n_out, n_in, fan_in=n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    wo, bo = uniform(N_CLASSES, hidden[-1], fan_in=hidden[-1]), uniform(N_CLASSES, fan_in=hidden[-1])
    opt = torch.optim.SGD([{"params": ws, "lr": LR_LOCAL, "weight_decay": WD_LOCAL},
                           {"params": [wo, bo], "lr": LR_OUT, "weight_decay": WD_OUT}],
                          momentum=MOMENTUM)
    x = torch.as_tensor(x_h, device=device, dtype=tdt)
    y = torch.as_tensor(y_h, device=device).long()
    c = rule.groups

    def layer(h, w):
        """(L, detached output r) of one hidden layer: objective_torch's math, one forward."""
        z = tr._activation(torch, h @ w.T, rule.activation, rule.slope)
        K = tr._kernel(torch, tr._representation(torch, z, rule), rule)
        Ky = tr._label_kernel(torch, y, N_CLASSES, rule.label_kernel, K.dtype)
        loss = tr._phsic(K, K) - rule.gamma * tr._phsic(Ky, K)
        with torch.no_grad():
            zg = z.reshape(z.shape[0], c, -1)
            zhat = zg - zg.mean(dim=2, keepdim=True)
            u = (rule.delta + (zhat * zhat).sum(dim=2, keepdim=True)) / zg.shape[2]
            r = F.dropout((zhat / u ** rule.p).reshape(z.shape), DROPOUT, training=True)
        return loss, r

    def step():
        opt.zero_grad(set_to_none=True)
        h, total = x, 0.0
        for w in ws:
            loss, h = layer(h, w)
            total = total + loss
        total = total + F.cross_entropy(h @ wo.T + bo, y)
        total.backward()
        opt.step()

    # the composed layer loss is objective_torch's, checked once on the first layer
    with torch.no_grad():
        ref = tr.objective_torch(x, ws[0], y, N_CLASSES, rule)
        assert torch.allclose(layer(x, ws[0])[0], ref, rtol=1e-4, atol=1e-7), "layer loss != objective_torch"
    return step


def floor_calls(be, hidden, m, dtype):
    """The step's unavoidable GEMMs (forward + weight gradient of every layer) as one callable."""
    rng = np.random.default_rng(1)
    sizes = [N_IN, *hidden, N_CLASSES]
    arrays = [tuple(be.asarray(rng.standard_normal(s).astype(dtype))
                    for s in ((m, n_in), (n_out, n_in), (m, n_out)))
              for n_in, n_out in zip(sizes[:-1], sizes[1:])]

    def gemms():
        for x, w, post in arrays:
            be.matmul(x, w.T)
            be.matmul(post.T, x)

    return gemms


def bench_step(backend, hidden=(1024, 1024, 1024), m=256, groups=32, dtype=np.float32, timing=None,
               autograd=True, torch_settings=None):
    """One record: step times (s) and samples/s of ours, autograd and the GEMM floor.

    ``torch_settings``: autograd's settings on the CPU (default all of
    :data:`threefactor.bench.autograd_child.SETTINGS`, two rounds; given, one round each)."""
    timing = timing or {}
    be = get_backend(backend)
    rule = make_rule(groups)
    x_h, y_h = batch(m, dtype)
    dev = "cupy" if be.name == "cupy" else "cpu"
    fns = {"ours": ours_call(be, list(hidden), rule, x_h, y_h, dtype),
           "floor": floor_calls(be, list(hidden), m, dtype)}
    autograd_note = None
    if autograd and dev == "cupy":          # on the GPU: same process, CUDA-event times
        try:
            import torch

            if torch.cuda.is_available():
                fns["autograd"] = torch_call(list(hidden), rule, x_h, y_h, dtype, "cuda")
        except ImportError:
            pass
    res = bench.time_all(fns, dev, timing)
    t = {k: v["median_s"] for k, v in res.items()}
    low = {k: v["min_s"] for k, v in res.items()}
    if autograd and dev == "cpu":          # on the CPU: its own process, its best settings, alternating
        from threefactor.bench import autograd_child

        if autograd_child.torch_available():
            own = autograd_child.autograd_rounds(lambda: time_call(fns["ours"], "cpu", **timing), hidden, m,
                                                 groups, np.dtype(dtype).name, timing,
                                                 rounds=2 if torch_settings is None else 1,
                                                 settings=torch_settings or autograd_child.SETTINGS)
            t["autograd"], t["ours_alternating"] = own["autograd_s"], own["ours_s"]
            low["autograd"] = min(c["min_s"] for c in own["autograd"][own["best_setting"]])
            autograd_note = {k: own[k] for k in ("best_setting", "autograd_by_setting_s", "ours_s", "speedup",
                                                 "speedup_rounds")}
    ag_ours = t.get("ours_alternating", t["ours"])
    rec = {"backend": be.name, "dtype": np.dtype(dtype).name, "m": m, "hidden": list(hidden),
           "groups": groups, "ours": "threefactor.nn.mlp.MLP.train_step (local, grp+div)",
           "step_s": t["ours"], "samples_per_s": m / t["ours"], "floor_s": t["floor"],
           "ratio_floor": t["ours"] / t["floor"], "autograd_s": t.get("autograd"),
           "autograd_samples_per_s": m / t["autograd"] if "autograd" in t else None,
           "speedup_vs_autograd": t["autograd"] / ag_ours if "autograd" in t else None,
           "autograd_own_process": autograd_note,
           "fastest": {"step_s": low["ours"], "floor_s": low["floor"],
                       "ratio_floor": low["ours"] / low["floor"], "autograd_s": low.get("autograd"),
                       "speedup_vs_autograd": low["autograd"] / low["ours"] if "autograd" in low else None},
           "loadavg": bench.loadavg()}
    return rec


HEADER = (f"{'backend':7} {'dtype':7} {'m':>5} {'ours ms':>9} {'samples/s':>9} {'autograd':>9} "
          f"{'samples/s':>9} {'speedup':>7} {'floor ms':>9} {'/floor':>6}")


def format_row(r):
    ag = (f"{r['autograd_s'] * 1e3:9.2f} {r['autograd_samples_per_s']:9.0f} {r['speedup_vs_autograd']:7.2f}"
          if r["autograd_s"] else f"{'-':>9} {'-':>9} {'-':>7}")
    return (f"{r['backend']:7} {r['dtype']:7} {r['m']:5d} {r['step_s'] * 1e3:9.2f} "
            f"{r['samples_per_s']:9.0f} {ag} {r['floor_s'] * 1e3:9.2f} {r['ratio_floor']:6.2f}")


def title(hidden, dtype, blas_threads, torch_threads):
    return (f"MLP step 784-{'-'.join(map(str, hidden))}-10, Gaussian grp+div, {np.dtype(dtype).name}; "
            f"BLAS threads {blas_threads}, torch threads {torch_threads}")


def run_steps(backends, hidden=(1024, 1024, 1024), m=256, groups=32, dtype=np.float32, timing=None,
              autograd=True, log=print, torch_settings=None):
    """:func:`bench_step` for each backend, printing a row each: (records, {skipped backend: why})."""
    usable, skipped = bench.usable_backends(backends)
    for name, why in skipped.items():
        log(f"skipped backend {name}: {why}")
    records = []
    for name in usable:
        rec = bench_step(name, list(hidden), m, groups, np.dtype(dtype), timing, autograd, torch_settings)
        records.append(rec)
        log(format_row(rec))
    return records, skipped


def main(argv=None):
    """``python benchmarks/bench_step.py``: bad use is an argparse usage error (exit status 2)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    ap.add_argument("--backend", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                    help="backends to time; unavailable ones are skipped with the reason (an error when "
                         "none is available)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="dtype of the network, ours and autograd's alike")
    ap.add_argument("--batch", type=at_least(2, int, "the batch size (the kernel compares pairs)"), default=256,
                    help="batch size m")
    ap.add_argument("--hidden", nargs="+", type=at_least(2, int, "a hidden width"), default=[1024, 1024, 1024],
                    help="hidden widths of the MLP")
    ap.add_argument("--groups", type=at_least(2, int, "the number of groups"), default=32,
                    help="groups c of each hidden layer (grp+div, p = 0.2); must divide every hidden width")
    ap.add_argument("--quick", action="store_true", help="smoke test: short budget")
    ap.add_argument("--budget", type=at_least(0.0, float, "the time budget in seconds"), default=None,
                    help="seconds of repeats per measurement (default 1.0; --quick 0.05)")
    ap.add_argument("--no-autograd", action="store_true", help="skip the PyTorch autograd baseline")
    ap.add_argument("--threads", type=at_least(1, int, "the thread count"), default=None, metavar="N",
                    help="threads for BLAS, Numba and torch alike (default: BLAS's own)")
    bench.add_heap_argument(ap)
    ap.add_argument("--json", default=None, metavar="PATH", type=output_file,
                    help="where to write the JSON (default benchmarks/results/<date>-<host>-step.json; "
                         "missing folders are created)")
    args = ap.parse_args(argv)
    for width in args.hidden:
        try:
            make_rule(args.groups).check_width(width)
        except ValueError as exc:
            ap.error(f"--groups {args.groups} does not suit --hidden {width}: {exc}")
    usable, unavailable = bench.usable_backends(args.backend)
    if not usable:
        ap.error("no backend to measure: " + "; ".join(f"--backend {name} is unavailable: {why}"
                                                       for name, why in unavailable.items()))
    path = args.json or bench.default_json_path("step")
    problem = writable_file_problem(path)
    if problem:
        ap.error(f"--json: {problem}")
    timing = bench.timing_settings(args.quick, args.budget)
    threads_set = set_threads(args.threads) if args.threads else None
    settings = {"backends": args.backend, "dtype": args.dtype, "batch": args.batch,
                "hidden": args.hidden, "groups": args.groups, "timing": timing,
                "blas_threads": bench.blas_threads(), "threads_set": threads_set, "torch_threads": None,
                "keep_freed_memory": bench.tune_heap(args)}
    if not args.no_autograd:
        settings["torch_threads"] = ("own process, best of its settings" if usable != ["cupy"] else
                                     bench.set_torch_threads())
    print(title(args.hidden, args.dtype, settings["blas_threads"], settings["torch_threads"]))
    print(HEADER)
    records, skipped = run_steps(args.backend, args.hidden, args.batch, args.groups, args.dtype, timing,
                                 not args.no_autograd, log=lambda s: print(s, flush=True),
                                 torch_settings=choose_settings(args.quick, args.threads))
    write_json(path, bench.document("step", records, settings, skipped))
    print(f"wrote {path}")
    return 0
