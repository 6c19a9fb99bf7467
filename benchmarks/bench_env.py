#!/usr/bin/env python
"""Default against tuned environment: the update and the MLP step in child processes, interleaved.

Each round runs one child with a clean default environment (no thread or malloc
variable set, as a new user has it) and one with ``OPENBLAS_THREAD_TIMEOUT=4
OMP_WAIT_POLICY=PASSIVE``, alternating which goes first, and prints the ratios
each child measured (update ÷ its GEMM floor, plain update ÷ its own GEMMs, MLP
step ÷ its GEMM floor, public call ÷ engine) and, per round, default's time over
tuned's.  See :mod:`threefactor.bench.envs`.  ::

    python benchmarks/bench_env.py                  # 3 rounds
    python benchmarks/bench_env.py --realtime       # children under chrt -f 50 (a machine busy with other work)
    python benchmarks/bench_env.py --first numpy    # the children import numpy before threefactor
    python benchmarks/bench_env.py --library-off    # also: the library's own settings off (as before them)
    python benchmarks/bench_env.py --quick          # smoke test
"""
import argparse
import sys

from threefactor.bench.envs import TUNED, compare
from threefactor.training.atomic import write_json


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds (one default and one tuned child each)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of interleaved repeats per callable")
    ap.add_argument("--first", choices=("numpy", "torch"), default=None,
                    help="module the children import before threefactor")
    ap.add_argument("--realtime", action="store_true", help="run the children under chrt -f 50 (Linux, root)")
    ap.add_argument("--library-off", action="store_true",
                    help="a third child per round: default environment with threefactor's own thread and heap "
                         "settings off (THREEFACTOR_THREADS=keep THREEFACTOR_MALLOC=default), as before them")
    ap.add_argument("--no-step", action="store_true", help="the update only, not the MLP step")
    ap.add_argument("--quick", action="store_true", help="smoke test: one round, short budget, no step")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write every child's result here")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.budget, args.no_step = 1, 0.02, True
    print(f"default environment vs tuned ({' '.join(f'{k}={v}' for k, v in TUNED.items())}); "
          f"m = 256, 1024 -> 1024, float32, numba; first import: {args.first or 'threefactor'}")
    res = compare(args.repeats, args.budget, not args.no_step, args.first, args.realtime, args.library_off)
    print("ranges over rounds (min-max):")
    for env in res["summary"]:
        print(f"  {env:11} " + "  ".join(f"{k} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in res["summary"][env].items()))
    print("  default time / tuned time, per round: "
          + "  ".join(f"{k} {min(v):.3f}-{max(v):.3f}" for k, v in res["default/tuned"].items()))
    if args.json:
        from threefactor.bench.machine import machine_info
        write_json(args.json, {"command": " ".join(["python", "benchmarks/bench_env.py", *sys.argv[1:]]),
                               "machine": machine_info(), **res})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
