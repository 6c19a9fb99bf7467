"""Emulated ``cupy.linalg`` (numpy's on the device buffers)."""
from __future__ import annotations

import numpy as _np

from ._emu.array import call as _call

__all__ = ["norm", "solve", "inv", "det", "eigh", "svd", "qr", "cholesky", "lstsq", "pinv", "matrix_power"]


def _delegate(name):
    fn = getattr(_np.linalg, name)

    def f(*args, **kwargs):
        return _call(fn, args, kwargs)

    f.__name__ = f.__qualname__ = name
    return f


globals().update({_n: _delegate(_n) for _n in __all__})
