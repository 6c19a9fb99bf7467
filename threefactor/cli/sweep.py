"""``threefactor sweep SPEC.toml``: train every run a spec names, on Dask (see :mod:`threefactor.training.sweep`)."""
from __future__ import annotations

import sys

from threefactor.cli.main import UsageError, at_least

DESCRIPTION = """\
Train every run of a sweep spec (TOML) on Dask, each in its own run directory under --out.

A spec has a [base] table of `threefactor train` options (flag names without the dashes, '-' or
'_' alike), an [axes] table whose lists are multiplied out (a list of tables sets several
options together), and seeds = [...]. Every run is resolved and checked before anything trains.
Re-running a spec skips finished runs and resumes interrupted ones from their checkpoints; a run
whose worker dies restarts elsewhere from its last checkpoint (--retries); a diverged run is
recorded, not retried; a finished run is never overwritten. At the end: a summary, the table
(mean and max - min over seeds, the paper's numbers beside) as table.md and table.csv, and
curves.png, all under --out (also `threefactor table OUT`).
"""

EPILOG = """\
examples:
  threefactor sweep benchmarks/sweeps/example.toml --out sweeps/example
  threefactor sweep benchmarks/sweeps/table1.toml --out sweeps/table1 --only dataset=fmnist --dry-run
  threefactor sweep spec.toml --out sweeps/s --scheduler tcp://10.0.0.5:8786   # an existing Dask cluster
  threefactor table sweeps/example           # the table and figure again, at any time

Exit status: 0 when every run finished or diverged, 1 when a run failed, 2 on bad use or a bad
spec (nothing trained), 130 after Ctrl-C (the runs keep their checkpoints; rerun to resume).
"""


def configure_parser(parser):
    import argparse
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description, parser.epilog = DESCRIPTION, EPILOG
    parser.add_argument("spec", metavar="SPEC", help="the sweep's TOML file")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder of the run directories (default sweeps/<spec name>)")
    parser.add_argument("--workers", type=at_least(1, int, "the number of workers"), default=None, metavar="N",
                        help="worker processes of the local cluster (default: cores // --threads-per-run)")
    parser.add_argument("--threads-per-run", dest="threads_per_run", type=at_least(1, int, "the thread count of a run"),
                        default=1, metavar="T", help="BLAS / Numba threads of each run (default 1)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="a running Dask scheduler (e.g. tcp://127.0.0.1:8786) instead of a local cluster")
    parser.add_argument("--runs-per-gpu", dest="runs_per_gpu", type=at_least(1, int, "the number of runs per GPU"),
                        default=None, metavar="K", help="GPU runs (backend = \"cupy\") sharing one GPU at once "
                                                        "(Dask resource GPU; default 1)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="keep the runs with this setting (repeatable; a key given twice: either value)")
    parser.add_argument("--retries", type=at_least(0, int, "the number of retries"), default=3, metavar="N",
                        help="restarts of a run whose worker died, from its last checkpoint (default 3)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="resolve and list the runs (new / resume / done / diverged); train nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def run(args):
    from threefactor.training.sweep import SpecError, SweepInterrupted, sweep
    try:
        result = sweep(args.spec, args.out, workers=args.workers, threads_per_run=args.threads_per_run,
                       scheduler=args.scheduler, runs_per_gpu=args.runs_per_gpu, only=args.only,
                       dry_run=args.dry_run, retries=args.retries, progress=args.progress)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:
        raise UsageError(f"{exc}: sweeps need Dask: pip install -e \".[sweep]\"") from None
    except SweepInterrupted:
        return 130
    except OSError as exc:
        print(f"threefactor sweep: error: cannot reach the scheduler or write the runs: {exc}", file=sys.stderr)
        return 1
    return 0 if result.ok or args.dry_run else 1
