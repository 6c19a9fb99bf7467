#!/usr/bin/env python
"""One training step of the Table 1 MLP: ours vs PyTorch autograd vs the step's GEMM floor.

The benchmark lives in :mod:`threefactor.bench.step` (also ``threefactor bench --step``)::

    python benchmarks/bench_step.py                       # numpy, numba (+ cupy on a GPU)
    python benchmarks/bench_step.py --backend numba --budget 5 --json out.json
"""
import sys

from threefactor.bench.step import main

if __name__ == "__main__":
    sys.exit(main())
