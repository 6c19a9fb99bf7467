"""Numba kernel for im2col on the CPU (the conv layers' patch matrix in one pass).

Same layout and bits as :func:`threefactor.rule.conv.im2col` (the numpy reference it is
tested against): row i·Ho·Wo + oh·Wo + ow, column (dy·kw + dx)·C_in + c holds
x[i, c, oh + dy - padding, ow + dx - padding], zero outside the image.  After one
channel-last copy of x it writes each row of the patch matrix once, contiguous runs
of C_in in and out, without the zero-padded copy and the kh·kw strided passes of
the numpy version.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True, fastmath=False)
def _im2col_nhwc(xn, kh, kw, padding, cols):
    """cols from channel-last xn (m, H, W, C): contiguous runs of C in and out."""
    m, h, w, c = xn.shape
    ho = h + 2 * padding - kh + 1
    wo = w + 2 * padding - kw + 1
    for i in prange(m):
        for oh in range(ho):
            for ow in range(wo):
                row = (i * ho + oh) * wo + ow
                for dy in range(kh):
                    y = oh + dy - padding
                    for dx in range(kw):
                        xx = ow + dx - padding
                        base = (dy * kw + dx) * c
                        if 0 <= y < h and 0 <= xx < w:
                            for ch in range(c):
                                cols[row, base + ch] = xn[i, y, xx, ch]
                        else:
                            for ch in range(c):
                                cols[row, base + ch] = 0


def im2col(x, kh: int, kw: int, padding: int):
    """Patches of x (m, C_in, H, W) as rows (m·Ho·Wo, kh·kw·C_in), as :func:`threefactor.rule.conv.im2col`."""
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    m, h, w, c = xn.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    cols = np.empty((m * ho * wo, kh * kw * c), dtype=x.dtype)
    _im2col_nhwc(xn, kh, kw, padding, cols)
    return cols
