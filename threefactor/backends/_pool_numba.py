"""Numba kernels for 2×2 max pooling of channel-last activity (the conv layers' CPU fast path).

Each kernel is one pass with the exact semantics of :func:`threefactor.rule.conv.max_pool_rows`
and :func:`threefactor.rule.conv.route_rows` (the readable numpy reference they are tested
against): the winner of a window is decided by the same tournament — top pair
(1 beats 0 only if strictly larger), bottom pair (3 beats 2 likewise), then the bottom
winner beats the top winner only if strictly larger — so both give the same bits.
Shapes: z, extra (m, H, W, C); pooled, winners (m, H//2, W//2, C).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, parallel=True, fastmath=False)


@njit(**_JIT)
def max_pool(z, pooled, idx):
    """pooled = max of each 2×2 window of z; idx = its winner dy·2 + dx (int8)."""
    m, ho, wo, c = pooled.shape
    for i in prange(m):
        for y in range(ho):
            for x in range(wo):
                for k in range(c):
                    q0 = z[i, 2 * y, 2 * x, k]
                    q1 = z[i, 2 * y, 2 * x + 1, k]
                    q2 = z[i, 2 * y + 1, 2 * x, k]
                    q3 = z[i, 2 * y + 1, 2 * x + 1, k]
                    top = q1 > q0
                    t01 = q1 if top else q0
                    bottom = q3 > q2
                    t23 = q3 if bottom else q2
                    if t23 > t01:
                        pooled[i, y, x, k] = t23
                        idx[i, y, x, k] = 3 if bottom else 2
                    else:
                        pooled[i, y, x, k] = t01
                        idx[i, y, x, k] = 1 if top else 0


@njit(**_JIT)
def gather(t, idx, out):
    """out = t at each window's winner (e.g. f'(a) and a at the pooled units)."""
    m, ho, wo, c = out.shape
    for i in prange(m):
        for y in range(ho):
            for x in range(wo):
                for k in range(c):
                    j = idx[i, y, x, k]
                    out[i, y, x, k] = t[i, 2 * y + j // 2, 2 * x + j % 2, k]


@njit(**_JIT)
def route(g, idx, out):
    """out (zeroed, (m, H, W, C)) gets g at each window's winner: the adjoint of :func:`gather`."""
    m, ho, wo, c = g.shape
    for i in prange(m):
        for y in range(ho):
            for x in range(wo):
                for k in range(c):
                    j = idx[i, y, x, k]
                    out[i, 2 * y + j // 2, 2 * x + j % 2, k] = g[i, y, x, k]


def max_pool_rows(z, *extra):
    """Drop-in for :func:`threefactor.rule.conv.max_pool_rows` on real numpy arrays."""
    m, h, w, c = z.shape
    shape = (m, h // 2, w // 2, c)
    pooled = np.empty(shape, dtype=z.dtype)
    idx = np.empty(shape, dtype=np.int8)
    max_pool(z, pooled, idx)
    picked = []
    for t in extra:
        out = np.empty(shape, dtype=t.dtype)
        gather(t, idx, out)
        picked.append(out)
    return pooled, idx, picked


def route_rows(g, idx, shape):
    """Drop-in for :func:`threefactor.rule.conv.route_rows` on real numpy arrays."""
    out = np.zeros(shape, dtype=g.dtype)
    route(g, idx, out)
    return out
