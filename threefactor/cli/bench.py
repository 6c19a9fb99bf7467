"""``threefactor bench``: the command line of the update-throughput suite (:mod:`threefactor.bench`).

It measures (``run_suite``, then with ``--step`` :mod:`threefactor.bench.step`), prints a table,
writes the JSON atomically, and without measuring anything prints a result file as Markdown
(``--summary``) or judges result files against the speed targets (``--targets``,
:mod:`threefactor.bench.targets`).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from threefactor.training.atomic import write_json
from threefactor.backends import BACKENDS, backend_names
from threefactor.bench.suite import BATCHES, DEFAULT_RULES, HEADER, RULE_ALIASES, SHAPES, VARIANTS, add_heap_argument, check_suite, default_json_path, document, run_suite, set_torch_threads, timing_settings, tune_heap, usable_backends
from threefactor.cli.main import UsageError, at_least, backend_name, output_file, writable_file_problem
from threefactor.names import unknown_name
from threefactor.bench.machine import blas_threads, set_threads


def markdown_summary(doc):
    """Markdown tables of an update or step JSON document (for benchmarks/RESULTS.md)."""
    m, rs = doc["machine"], doc["results"]
    head = (f"{m['date']} on {m['cpu']} ({m['cores']} cores"
            + (f", GPU {m['gpu']['name']}" if m.get("gpu") else "") + f"), {m.get('scheduling')}, "
            f"threads env {m.get('thread_env')}; command: `{doc['command']}`")
    f2 = lambda x: "-" if x is None else f"{x:.2f}"
    if doc["kind"] == "step":
        lines = ["| backend | ours ms | samples/s | autograd ms | speedup | floor ms | ours / floor |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['backend']} | {r['step_s'] * 1e3:.2f} | {r['samples_per_s']:.0f} | "
                  f"{f2(r['autograd_s'] and r['autograd_s'] * 1e3)} | {f2(r['speedup_vs_autograd'])} | "
                  f"{r['floor_s'] * 1e3:.2f} | {r['ratio_floor']:.2f} |" for r in rs]
        return "\n".join([head, ""] + lines)
    lines = ["| backend | rule | m | n_in×n_out | ours ms | public ms | floor ms | ours / floor | "
             "ours / all GEMMs | autograd ms | autograd / ours | autograd / floor | graph ms | Gsyn/s | peak MiB |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rs:
        ag, fl, gr, mem = r["autograd_s"], r["gemm"]["floor_s"], r.get("update_graph_s"), r["peak_mem_bytes"]
        lines.append(
            f"| {r['backend']} | {r['rule']} | {r['m']} | {r['n_in']}×{r['n_out']} | "
            f"{r['update_s'] * 1e3:.3f} | {r['public_s'] * 1e3:.3f} | {fl * 1e3:.3f} | {r['ratio_floor']:.2f} | "
            f"{f2(r.get('ratio_gemms'))} | "
            f"{f2(ag and ag * 1e3)} | {f2(r['speedup_vs_autograd'])} | {f2(ag and ag / fl)} | "
            f"{f2(gr * 1e3) if isinstance(gr, float) else '-'} | {r['synapses_per_s'] / 1e9:.3f} | "
            f"{'-' if mem is None else f'{mem / 2 ** 20:.1f}'} |")
    return "\n".join([head, ""] + lines)


# -- command line ------------------------------------------------------------------
def _shape(text):
    """argparse type of --shapes: ``N_INxN_OUT``, both >= 1."""
    try:
        n_in, n_out = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is N_INxN_OUT, e.g. 1024x1024; got {text!r}") from None
    if n_in < 1 or n_out < 1:
        raise argparse.ArgumentTypeError(f"a shape's dimensions must be >= 1 (N_INxN_OUT, e.g. 1024x1024); "
                                         f"got {text!r}")
    return n_in, n_out


def _rule_name(text):
    """argparse type of --rules: a variant as ``KERNEL[-GROUPING]`` in any spelling of the one
    vocabulary (gaussian / gauss / Gaussian, cosine / cossim; grp+div / grpdiv), as bench's
    variant name (gaussian-grpdiv -> gauss-grp+div); an unknown one with the nearest variants."""
    from threefactor.rule.kernels import KERNEL_NAMES
    from threefactor.rule.rules import GROUPING_NAMES
    kernel, sep, grouping = text.partition("-")
    kernel = KERNEL_NAMES.get(kernel)
    grouping = GROUPING_NAMES.get(grouping) if sep else "plain"
    if kernel is not None and grouping is not None:
        name = RULE_ALIASES.get(kernel, kernel) + ("" if grouping == "plain" else "-" + grouping)
        if name in VARIANTS:
            return name
    spelt = {k + g: v + g for k, v in RULE_ALIASES.items() for g in ("", "-grp+div") if v + g in VARIANTS}
    raise argparse.ArgumentTypeError(str(unknown_name(None, text, VARIANTS, aliases=spelt)))


def configure_parser(parser):
    parser.epilog = ("Rule variants: gauss is the Gaussian kernel, cossim the cosine-similarity kernel (check "
                     "--kernel gaussian / cosine; train --rule gaussian / cosine), each plain or -grp+div "
                     "(32 groups, p = 0.2; its update is grp's). Exit status 2 on bad use, and when no "
                     "requested backend is available (nothing is written then).")
    parser.add_argument("--backend", nargs="+", type=backend_name, metavar="BACKEND", default=list(BACKENDS),
                        help="backends to time (" + ", ".join(backend_names()) + " or one another package "
                             "registers); unavailable ones are skipped with the reason (an error when "
                             "none is available)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the arrays, ours and autograd's alike")
    parser.add_argument("--m", nargs="+", type=at_least(2, int, "a batch size (the kernel compares pairs)"),
                        default=None, metavar="M",
                        help=f"batch sizes (default {' '.join(map(str, BATCHES))}; --quick: 256)")
    parser.add_argument("--shapes", nargs="+", type=_shape, default=None, metavar="NINxNOUT",
                        help="layer shapes n_in x n_out (default 784x1024 1024x1024 4096x4096; --quick: "
                             "1024x1024)")
    parser.add_argument("--rules", nargs="+", type=_rule_name, metavar="RULE",
                        default=list(DEFAULT_RULES),
                        help="rule variants: " + ", ".join(VARIANTS) + " (see below; any case, and "
                             "gaussian / cosine and -grpdiv are accepted for gauss / cossim and -grp+div)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: short time budget, one batch size and shape by default")
    parser.add_argument("--budget", type=at_least(0.0, float, "the time budget in seconds"), default=None,
                        help="seconds of repeats per measurement (default 1.0; --quick 0.05)")
    parser.add_argument("--no-autograd", action="store_true", help="skip the PyTorch autograd baseline")
    add_heap_argument(parser)
    parser.add_argument("--profile", action="store_true",
                        help="also time each primitive of the update (synchronised), as profile_s")
    parser.add_argument("--threads", type=at_least(1, int, "the thread count"), default=None, metavar="N",
                        help="threads for BLAS, Numba and torch alike (default: BLAS's own; "
                             "1 gives the steadiest numbers on a shared machine)")
    parser.add_argument("--step", action="store_true",
                        help="then time one training step of the Table 1 MLP (784-1024x3-10, batch 256, "
                             "Gaussian grp+div) per backend against autograd and the step's GEMM floor "
                             "(threefactor.bench.step); JSON next to the suite's, ending -step.json")
    parser.add_argument("--json", default=None, metavar="PATH", type=output_file,
                        help="where to write the JSON (default benchmarks/results/<date>-<host>.json; "
                             "--quick: ~/.cache/threefactor/bench/<date>-<host>-quick.json; missing folders "
                             "are created)")
    parser.add_argument("--summary", default=None, metavar="PATH",
                        help="measure nothing: print a bench JSON (update or step) as Markdown tables")
    parser.add_argument("--targets", nargs="+", default=None, metavar="PATH",
                        help="measure nothing: judge bench JSONs (update and step, CPU and GPU) against the "
                             "speed targets (ours / floor, autograd / ours, peak memory) and print, per target, "
                             "the lowest ratio to the floor that the rule's own GEMMs allow "
                             "(threefactor.bench.targets)")


def run(args):
    if args.targets or args.summary:
        from threefactor.bench import targets
        try:
            docs = targets.load(args.targets or [args.summary], "--targets" if args.targets else "--summary")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.targets:
        print(targets.markdown(docs))
        return 0
    if args.summary:
        doc = docs[0][1]
        try:
            print(markdown_summary(doc))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"--summary: {args.summary!r} is an incomplete bench result "
                             f"({type(exc).__name__}: {exc})") from None
        return 0
    batches = args.m or ([256] if args.quick else list(BATCHES))
    shapes = args.shapes or ([(1024, 1024)] if args.quick else list(SHAPES))
    try:
        check_suite(batches, shapes, args.rules)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    usable, unavailable = usable_backends(args.backend)
    if not usable:
        raise UsageError("no backend to measure: " + "; ".join(f"--backend {name} is unavailable: {why}"
                                                                for name, why in unavailable.items()))
    path = args.json or (quick_json_path() if args.quick else default_json_path())
    step_path = _step_path(path) if args.step else None
    for where in (path, step_path):
        problem = where and writable_file_problem(where)
        if problem:
            raise UsageError(f"--json: {problem}")
    timing = timing_settings(args.quick, args.budget)
    threads_set = set_threads(args.threads) if args.threads else None
    dtype = np.dtype(args.dtype)
    settings = {"backends": args.backend, "dtype": dtype.name, "m": batches,
                "shapes": [list(s) for s in shapes], "rules": args.rules, "timing": timing,
                "blas_threads": blas_threads(), "threads_set": threads_set, "torch_threads": None,
                "keep_freed_memory": tune_heap(args)}
    if not args.no_autograd:
        settings["torch_threads"] = ("own process, best of its settings (CPU)" if set_torch_threads()
                                     else "torch not installed")
    print(f"threefactor bench: {dtype.name}, BLAS threads {settings['blas_threads']}, torch threads "
          f"{settings['torch_threads']}; times are medians, speedup = autograd / ours")
    if settings["blas_threads"] > 1 and not os.environ.get("OMP_WAIT_POLICY"):
        print("note: with several threads, OpenBLAS and torch's OpenMP workers spin after each call and "
              "slow each other; for steadier ratios set OPENBLAS_THREAD_TIMEOUT=4 OMP_WAIT_POLICY=PASSIVE "
              "or use --threads 1 (see benchmarks/RESULTS.md)")
    print(HEADER)
    records, skipped = run_suite(args.backend, batches, shapes, args.rules, dtype, timing,
                                 not args.no_autograd, log=lambda s: print(s, flush=True),
                                 profile=args.profile, torch_settings=_torch_settings(args))
    for name, why in skipped.items():
        print(f"skipped backend {name}: {why}")
    write_json(path, document("update", records, settings, skipped))
    print(f"wrote {path}")
    if args.step:
        _run_step(args, dtype, timing, settings, step_path)
    return 0


def quick_json_path():
    """Where ``--quick`` writes without ``--json``: the user's cache
    (``$XDG_CACHE_HOME/threefactor/bench/<date>-<host>-quick.json``), never the current folder,
    so that a smoke test run in a checkout adds nothing to the repository."""
    from threefactor.data.download import cache_dir
    root, ext = os.path.splitext(os.path.basename(default_json_path()))
    return str(cache_dir() / "bench" / f"{root}-quick{ext}")


def _step_path(suite_path):
    """Where ``--step`` writes: the suite's JSON path with ``-step`` before the extension."""
    root, ext = os.path.splitext(suite_path)
    return f"{root}-step{ext or '.json'}"


def _torch_settings(args):
    """Autograd's settings on the CPU (its own processes): --threads fixes them, --quick tries one."""
    from threefactor.bench.autograd_child import choose_settings
    return choose_settings(args.quick, args.threads)


def _run_step(args, dtype, timing, settings, path):
    """``--step``: the Table 1 MLP training step on the same backends, same timing and threads."""
    from threefactor.bench import step as bench_step

    step_settings = dict(settings, batch=256, hidden=[1024, 1024, 1024], groups=32)
    for key in ("m", "shapes", "rules"):
        step_settings.pop(key)
    print()
    print(bench_step.title(step_settings["hidden"], dtype, settings["blas_threads"], settings["torch_threads"]))
    print(bench_step.HEADER)
    records, skipped = bench_step.run_steps(args.backend, dtype=dtype, timing=timing,
                                            autograd=not args.no_autograd, log=lambda s: print(s, flush=True),
                                            torch_settings=_torch_settings(args))
    write_json(path, document("step", records, step_settings, skipped))
    print(f"wrote {path}")
