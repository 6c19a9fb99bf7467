"""Moved to :mod:`threefactor.heap` (the library uses it now, not only the benchmarks): this path gives
the same module object."""
import sys

from threefactor import heap

sys.modules[__name__] = heap
