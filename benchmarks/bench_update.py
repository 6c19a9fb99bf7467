#!/usr/bin/env python
"""Layer-update throughput: a thin wrapper around ``threefactor bench`` (same flags).

    python benchmarks/bench_update.py --backend numpy numba --m 256 --shapes 1024x1024
    python benchmarks/bench_update.py --quick          # smoke test, seconds

See :mod:`threefactor.bench` for what is measured and the JSON keys, :mod:`threefactor.cli.bench` for the flags.
"""
import sys

from threefactor.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
