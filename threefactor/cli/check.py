"""``threefactor check``: the command line, table and JSON report of :mod:`threefactor.verify.gradcheck`.

The checks themselves (finite differences, complex step, autograd) live in
:mod:`threefactor.verify.gradcheck`; this module parses options, prints the table (variant,
backend, method, max relative error, worst synapse, both values, PASS/FAIL) and
writes the JSON report atomically.  Exit status: 0 all pass, 1 a failure, 2 bad use.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np

from threefactor.training.atomic import write_json as _write_json
from threefactor.backends import BackendUnavailable, backend_names, get_backend
from threefactor.verify.gradcheck import METHODS, TOLERANCES, _backend_names
from threefactor.verify.variants import check_all, check_batchnorm_all, check_conv_all
from threefactor.cli.main import UsageError, at_least, backend_name, named, output_file
from threefactor.names import is_object_spec, load_object
from threefactor.rule.kernels import KERNEL_NAMES, kernel_names, resolve_kernel
from threefactor.rule.rules import (ACTIVATION_NAMES, ACTIVATIONS, GROUPING_NAMES, GROUPINGS, LABEL_KERNEL_NAMES,
                                    LABEL_KERNELS)

def _kernel_name(text):
    """argparse type of --kernel: a registered kernel, any case or alias (gauss, cossim, ...), as its
    canonical name; or a user's kernel ``path/to/file.py:Class`` / ``package.module:Class``, kept as
    written (loaded when the checks build their Rule)."""
    if is_object_spec(text):
        try:
            resolve_kernel(text, "--kernel")
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    try:
        return KERNEL_NAMES.resolve(text, None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser):
    """Arguments of ``threefactor check``."""
    parser.epilog = ("Exit status: 0 when every comparison passes, 1 on a failure, 2 on bad use. "
                     "Dense problems are m samples x n_in inputs -> n_out neurons, 3 classes; the conv "
                     "problem has a fixed size.")
    parser.add_argument("--backend", nargs="+", default=None, type=backend_name, metavar="BACKEND",
                        help="backends to check: " + ", ".join(backend_names()) + " or one another package registers "
                             "(default: every one available here)")
    parser.add_argument("--kernel", nargs="+", default=None, type=_kernel_name, metavar="NAME|FILE.py:Class",
                        help="kernels: registered names, any case ("
                             + ", ".join(kernel_names()) + "; old spellings such as gauss, cossim are "
                             "aliases), or a user kernel path/to/file.py:Class or package.module:Class "
                             "(default: every registered kernel, or none when --kernel-module is given)")
    parser.add_argument("--kernel-module", action="append", default=[], metavar="MODULE:NAME",
                        help="a user kernel: class (built with no arguments) or object, e.g. "
                             "my_module:MyKernel or path/to/file.py:MyKernel; repeatable (the same as "
                             "--kernel MODULE:NAME)")
    parser.add_argument("--activation", nargs="+", default=list(ACTIVATIONS), type=named(ACTIVATION_NAMES),
                        metavar="F", help="activations f of the layer: " + ", ".join(ACTIVATIONS) + " (default: all)")
    parser.add_argument("--grouping", nargs="+", default=list(GROUPINGS), type=named(GROUPING_NAMES),
                        metavar="G", help="plain (no groups), grp (groups, p = 0.5) or grp+div (groups and divisive "
                             "normalisation, p = 0.2) (default: all)")
    parser.add_argument("--label-kernel", nargs="+", default=["cosine"], type=named(LABEL_KERNEL_NAMES),
                        metavar="K", help="kernels on the one-hot labels: " + ", ".join(LABEL_KERNELS))
    parser.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS,
                        help="references for -dL/dW: fd (4th-order finite differences), complex (complex "
                             "step), torch (PyTorch autograd; skipped without torch) (default: all)")
    parser.add_argument("--dtype", default="float64", choices=tuple(TOLERANCES),
                        help="dtype of the explicit update (the references are float64); tolerances: "
                             + "; ".join(f"{d} " + ", ".join(f"{m} {t:g}" for m, t in tol.items())
                                         for d, tol in TOLERANCES.items()))
    parser.add_argument("--seed", type=at_least(0, int, "the seed"), default=0,
                        help="seed of the random problem (x, w, labels)")
    parser.add_argument("--m", type=at_least(2, int, "the batch size (a kernel compares pairs)"), default=6,
                        help="batch size of the dense problem")
    parser.add_argument("--n-in", type=at_least(1, int, "the input width"), default=5,
                        help="inputs of the dense layer")
    parser.add_argument("--n-out", type=at_least(1, int, "the layer width"), default=8,
                        help="neurons of the dense layer (grp, grp+div: a multiple of --groups, >= 2 per group)")
    parser.add_argument("--groups", type=at_least(2, int, "the number of groups"), default=4,
                        help="number of groups of grp, grp+div")
    parser.add_argument("--json", default=None, metavar="PATH", type=output_file,
                        help="also write the results as JSON (missing folders are created)")
    parser.add_argument("--conv", action=argparse.BooleanOptionalAction, default=None,
                        help="--conv: only the conv-layer variants (3x3 conv, C_in 2 -> C_out 6, 3 groups, "
                             "with and without max pooling; complex step); --no-conv: only the dense "
                             "ones (default: both)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="also check the rule through batchnorm (Table 7's AdamW + batchnorm variants, "
                             "not biologically plausible): dW, dgamma, dbeta of a dense and a conv layer "
                             "(max pool) against complex-step gradients, per kernel x grouping x activation "
                             "(dense only with --no-conv, conv only with --conv)")
    return parser


def load_kernel(spec):
    """The kernel named by ``module:Name`` or ``path/file.py:Name`` (a class is instantiated).

    Raises :class:`threefactor.cli.UsageError` naming --kernel-module when the spec is malformed,
    the module cannot be found, read or imported, or has no such name
    (:func:`threefactor.names.load_object`, the loader of the API, train and check).
    """
    try:
        if not is_object_spec(spec):
            load_object(spec, "--kernel-module")      # raises: not MODULE:NAME
        return resolve_kernel(spec, "--kernel-module")
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _fmt(v):
    return "-" if v != v else f"{v: .6e}"


def repeated_skips(results):
    """{(method, note): count} of the skips that share their reason with another (e.g. every torch
    comparison when torch is not installed): the table leaves them out, :func:`skip_lines` says each once."""
    counts = {}
    for r in results:
        if r.passed is None:
            counts[(r.method, r.note)] = counts.get((r.method, r.note), 0) + 1
    return {key: n for key, n in counts.items() if n > 1}


def skip_lines(results):
    """One line per reason shared by several skipped comparisons (:func:`repeated_skips`)."""
    lines = []
    for (method, note), n in repeated_skips(results).items():
        lines.append(f"skipped {n} {method} comparisons: {note or 'no reason given'}")
    return lines


def format_table(results):
    """The results as an aligned text table, one line per (variant, backend, method); skips that
    share their reason with others are left out (:func:`skip_lines` says them once)."""
    head = ("variant", "backend", "method", "max rel error", "worst (n, k)", "explicit",
            "reference", "status")
    repeated = repeated_skips(results)
    rows = [(r.variant, r.backend, r.method, _fmt(r.max_rel_error),
             "-" if r.worst[0] < 0 else f"({r.worst[0]}, {r.worst[1]})", _fmt(r.explicit),
             _fmt(r.reference), r.status + (f" ({r.note})" if r.note else "")) for r in results
            if not (r.passed is None and (r.method, r.note) in repeated)]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    widths[-1] = len(head[-1])
    line = lambda cells: "  ".join(str(c).ljust(wd) for c, wd in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * wd for wd in widths])] + [line(r) for r in rows])


def _json_number(v):
    return v if np.isfinite(v) else None


def write_json(path, results, meta=None):
    """Write ``{"meta", "passed", "n_failed", "results": [...]}`` atomically (temp file + os.replace)."""
    items = []
    for r in results:
        d = asdict(r)
        d.update(worst=list(r.worst), status=r.status, max_rel_error=_json_number(r.max_rel_error),
                 explicit=_json_number(r.explicit), reference=_json_number(r.reference))
        items.append(d)
    doc = {"meta": meta or {}, "passed": all(r.ok for r in results),
           "n_failed": sum(not r.ok for r in results), "results": items}
    _write_json(path, doc)


def run(args) -> int:
    """``threefactor check``: print the table; exit 0 when all pass, 1 on a failure, 2 on bad use."""
    try:
        kernels = list(args.kernel or ([] if args.kernel_module else kernel_names()))
        kernels += [load_kernel(spec) for spec in args.kernel_module]
        available = _backend_names()
        backends = list(args.backend) if args.backend else list(available)
        missing = {}
        for b in backends:
            if b not in available:
                try:
                    get_backend(b)
                except (BackendUnavailable, ImportError) as exc:
                    missing[b] = str(exc)
        if missing:
            raise UsageError("; ".join(f"--backend {b} is unavailable: {why}" for b, why in missing.items()))
        conv = getattr(args, "conv", None)
        results = [] if conv else check_all(
            backends=backends, kernels=kernels, groupings=args.grouping, activations=args.activation,
            label_kernels=args.label_kernel, groups=args.groups, dtype=args.dtype, m=args.m,
            n_in=args.n_in, n_out=args.n_out, seed=args.seed, methods=tuple(args.method))
        if conv is not False and "complex" in args.method:
            results += check_conv_all(backends=backends, kernels=kernels, groupings=args.grouping,
                                      activations=args.activation, label_kernels=args.label_kernel,
                                      dtype=args.dtype, seed=args.seed)
        if getattr(args, "batchnorm", False) and "complex" in args.method:
            kinds = {None: ("dense", "conv"), True: ("conv",), False: ("dense",)}[conv]
            results += check_batchnorm_all(backends=backends, kernels=kernels, groupings=args.grouping,
                                           activations=args.activation, layer_kinds=kinds, dtype=args.dtype,
                                           seed=args.seed)
        if not results:
            raise ValueError("nothing to check: --conv needs a named --kernel and --method complex")
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        # a rule that does not suit the problem (--n-out vs --groups), or a user kernel that
        # lacks matrix/pullback or fails in them
        raise UsageError(str(exc)) from None
    print(format_table(results))
    for line in skip_lines(results):
        print(line)
    failed = sum(not r.ok for r in results)
    skipped = sum(r.passed is None for r in results)
    print(f"\n{len(results)} comparisons, {failed} failed, {skipped} skipped "
          f"(relative error = max|dW - ref| / max|ref|; {args.dtype}; seed {args.seed})")
    if args.json:
        from threefactor import __version__
        meta = {"version": __version__, "dtype": args.dtype, "seed": args.seed, "m": args.m,
                "n_in": args.n_in, "n_out": args.n_out, "groups": args.groups,
                "conv": {None: "dense and conv", True: "conv only", False: "dense only"}[getattr(args, "conv", None)],
                "batchnorm": bool(getattr(args, "batchnorm", False)),
                "backends": backends, "tolerances": TOLERANCES[args.dtype],
                "relative_error": "max|dW - ref| / max|ref|"}
        write_json(args.json, results, meta)
    return 1 if failed else 0
