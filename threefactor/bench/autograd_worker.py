"""The child process of :mod:`threefactor.bench.autograd_child`: times PyTorch autograd alone, torch imported
before anything else (``python -m threefactor.bench.autograd_worker JSON``; prints one JSON line)."""
from __future__ import annotations

import json
import sys


def measure(hidden, m, groups, dtype, timing, threads=None):
    """In the child: median/min seconds of one autograd step (torch imported first)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    import numpy as np

    from threefactor.bench import step as bench_step
    from threefactor.bench.timing import time_call

    rule = bench_step.make_rule(groups)
    x, y = bench_step.batch(m, np.dtype(dtype))
    fn = bench_step.torch_call(list(hidden), rule, x, y, np.dtype(dtype), "cpu")
    res = time_call(fn, "cpu", **timing)
    return {**res, "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def measure_updates(cases, dtype, timing, threads=None):
    """In the child: per case (m, n_in, n_out, rule name) autograd's update and torch's own floor GEMMs."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from threefactor.bench.suite import VARIANTS, autograd_call, case_arrays
    from threefactor.bench.timing import time_interleaved

    out = []
    for m, n_in, n_out, rule in cases:
        step, floor = autograd_call(*case_arrays(m, n_in, n_out, dtype), VARIANTS[rule], dtype, "cpu")
        out.append(time_interleaved({"autograd": step, "torch_gemm": floor}, **timing))
    return {"cases": out, "torch_threads": torch.get_num_threads()}


def _main(argv=None):
    args = json.loads((argv or sys.argv[1:])[0])
    if args["kind"] == "update":
        print(json.dumps(measure_updates(args["cases"], args["dtype"], args["timing"], args["threads"])))
    else:
        print(json.dumps(measure(args["hidden"], args["m"], args["groups"], args["dtype"], args["timing"],
                                 args["threads"])))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
