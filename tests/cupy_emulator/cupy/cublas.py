"""Emulated ``cupy.cublas`` (the one routine threefactor calls).

``syrk`` follows CuPy's wrapper: ``out := alpha · op(a) op(a)ᵀ + beta · out`` where only one
triangle of ``out`` is written (the upper one unless ``lower``), the other left as it was, so a
caller that reads the unwritten triangle of an ``empty`` buffer reads the emulator's poison.
Without ``out`` a zero F-ordered (n, n) array is made, as CuPy does.
"""
from __future__ import annotations

import numpy as _np

from ._emu.array import unwrap as _unwrap
from ._emu.array import wrap as _wrap

__all__ = ["syrk"]


def syrk(trans, a, out=None, alpha=1.0, beta=0.0, lower=False):
    """One triangle of alpha · a aᵀ (trans 'N') or alpha · aᵀ a (trans 'T') + beta · out."""
    x = _unwrap(a)
    assert x.ndim == 2
    if x.dtype.char not in "fdFD":
        raise TypeError("invalid dtype")
    if trans in ("N", "n", 0):
        prod = x.astype(_np.float64) @ x.T.astype(_np.float64)
    elif trans in ("T", "t", 1):
        prod = x.T.astype(_np.float64) @ x.astype(_np.float64)
    else:
        raise TypeError(f"invalid trans (N or T), got {trans!r}")
    n = prod.shape[0]
    if out is None:
        out = _wrap(_np.zeros((n, n), dtype=x.dtype, order="F"))
        beta = 0.0
    o = _unwrap(out)
    assert o.shape == (n, n) and o.dtype == x.dtype
    tri = _np.tril_indices(n) if lower else _np.triu_indices(n)
    old = o[tri] if beta else 0.0
    o[tri] = (alpha * prod[tri] + beta * old).astype(o.dtype)
    return out
