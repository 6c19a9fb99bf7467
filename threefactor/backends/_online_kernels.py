"""Numba kernel of the online (two-point) rule: the per-step weight update in one pass over W.

A step of B streams changes every synapse by a sum of rank-one terms
(:mod:`threefactor.rule.online`, Eq. 57 / 63a)::

    W[n, k] += Σ_r ut[n, r] · pre[r, k],      r < R = 2B

with ``ut`` (n_out, R) the post-synaptic terms already multiplied by the third
factor, the sign of the pair and the learning rate, and ``pre`` (R, n_in) the
pre-synaptic activities [x_t; x_{t-Δt}].  ΔW itself is never formed: each row of
W is read and written once (``prange`` over rows n; one thread below
``SERIAL_BELOW``), and its R terms are added four at a time while the row is in
the L1 cache.  For small R this is a memory-bound pass whose floor is one read
and one write of W; for large R it is a GEMM written by hand, and
:func:`threefactor.rule.online.apply_update` hands it to BLAS instead (``BLAS_FROM``).

All arrays share one dtype (float32 or float64); fastmath is off, so each
row's terms are added in order r = 0, 1, 2, ... (four per pass).  The exception is the step
fused with the next forward pass (:func:`sgd_low_rank_forward`, B = 1 and 2): its dot products
are reassociated and its multiply-adds fused, so it equals the step and the product taken apart
up to float rounding.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

#: From this many rank-one terms (R = 2B) on, in-place BLAS GEMM (``W ← W + ut · pre``,
#: beta = 1: also one pass over W, blocked) beats the loop here.  Measured on one
#: AMD EPYC core, float32: at 4096 x 4096 this loop takes 0.95x a copy of W for
#: R = 2 and 1.1x for R = 4 (BLAS 1.2x, 1.3x); they tie at R = 8, BLAS wins beyond.
BLAS_FROM = 8


#: Below this many multiply-adds (n_out · n_in · R) the update runs on one thread:
#: a parallel launch costs more than it saves, and on a busy machine far more.
SERIAL_BELOW = 1 << 22


@njit(cache=True, fastmath=False, nogil=True)
def _row(row, coef, pre):
    """row += Σ_r coef[r] · pre[r], four terms per pass over the row."""
    n_in = row.shape[0]
    r_all = pre.shape[0]
    r = 0
    while r + 4 <= r_all:
        c0, c1, c2, c3 = coef[r], coef[r + 1], coef[r + 2], coef[r + 3]
        p0, p1, p2, p3 = pre[r], pre[r + 1], pre[r + 2], pre[r + 3]
        for k in range(n_in):
            row[k] += c0 * p0[k] + c1 * p1[k] + c2 * p2[k] + c3 * p3[k]
        r += 4
    while r + 2 <= r_all:
        c0, c1 = coef[r], coef[r + 1]
        p0, p1 = pre[r], pre[r + 1]
        for k in range(n_in):
            row[k] += c0 * p0[k] + c1 * p1[k]
        r += 2
    if r < r_all:
        c0 = coef[r]
        p0 = pre[r]
        for k in range(n_in):
            row[k] += c0 * p0[k]


@njit(cache=True, parallel=True, fastmath=False, nogil=True)
def accumulate(w, ut, pre):
    """W += ut · pre in place, one pass over W, rows in parallel.

    Parameters
    ----------
    w : (n_out, n_in) C-contiguous, updated in place
    ut : (n_out, R) post-synaptic terms × third factor × sign × learning rate
    pre : (R, n_in) pre-synaptic activities
    """
    for n in prange(w.shape[0]):
        _row(w[n], ut[n], pre)


@njit(cache=True, fastmath=False, nogil=True)
def accumulate_serial(w, ut, pre):
    """:func:`accumulate` on one thread (small updates)."""
    for n in range(w.shape[0]):
        _row(w[n], ut[n], pre)


#: Up to this many rank-one terms (R = 2B) the SGD step of the optimiser takes the two-point
#: update as it is, in one pass over W and its momentum buffer (:func:`sgd_low_rank`); from
#: BLAS_FROM on, ΔW is formed by one GEMM and the step is the optimiser's own fused pass.
LOW_RANK_UP_TO = BLAS_FROM - 1


@njit(cache=True, fastmath=False, nogil=True)
def _sgd_row(w, buf, ut, pre, sign, wd, mu, lr, scratch):
    """One row of :func:`sgd_low_rank` (R = 0, 2, 3 or any, the terms added in order r = 0, 1, ...).

    R = 2 (one pair per sample at B = 1) and R = 3 (two pairs, ``--delays 2``) are written out so that
    the loop over k vectorises; other R accumulate g term by term in ``scratch`` (same order)."""
    n_in = w.shape[0]
    r_all = pre.shape[0]
    if r_all == 2:
        c0, c1 = ut[0], ut[1]
        p0, p1 = pre[0], pre[1]
        for k in range(n_in):
            wk = w[k]
            d = sign * (c0 * p0[k] + c1 * p1[k]) + wd * wk
            b = buf[k] * mu + d
            buf[k] = b
            w[k] = wk - lr * b
        return
    if r_all == 3:
        c0, c1, c2 = ut[0], ut[1], ut[2]
        p0, p1, p2 = pre[0], pre[1], pre[2]
        for k in range(n_in):
            wk = w[k]
            d = sign * (c0 * p0[k] + c1 * p1[k] + c2 * p2[k]) + wd * wk
            b = buf[k] * mu + d
            buf[k] = b
            w[k] = wk - lr * b
        return
    for k in range(n_in):
        scratch[k] = 0
    for r in range(r_all):
        c, p = ut[r], pre[r]
        for k in range(n_in):
            scratch[k] += c * p[k]
    for k in range(n_in):
        wk = w[k]
        d = sign * scratch[k] + wd * wk
        b = buf[k] * mu + d
        buf[k] = b
        w[k] = wk - lr * b


@njit(cache=True, nogil=True)
def _scratch_size(r_all, n_in):
    """The length of :func:`_sgd_row`'s scratch row: 0 where R is written out."""
    return 0 if r_all == 2 or r_all == 3 else n_in


@njit(cache=True, fastmath=False, nogil=True)
def sgd_low_rank_serial(w, buf, ut, pre, sign, wd, mu, lr):
    """:func:`sgd_low_rank` on one thread."""
    scratch = np.empty(_scratch_size(pre.shape[0], w.shape[1]), w.dtype)
    for n in range(w.shape[0]):
        _sgd_row(w[n], buf[n], ut[n], pre, sign, wd, mu, lr, scratch)


@njit(cache=True, parallel=True, fastmath=False, nogil=True)
def sgd_low_rank(w, buf, ut, pre, sign, wd, mu, lr):
    """The optimiser's SGD step (:class:`threefactor.nn.optim.SGD`) with g = ut · pre, never formed.

    For every synapse, in one pass over W and its momentum buffer (rows in parallel)::

        g = Σ_r ut[n, r] pre[r, k];   d = sign · g + wd · w;   buf = μ buf + d;   w -= lr · buf

    Parameters
    ----------
    w, buf : (n_out, n_in) C-contiguous, updated in place
    ut : (n_out, R) post-synaptic terms × third factor × sign of the pair (the update's ``post.T``)
    pre : (R, n_in) pre-synaptic activities
    sign, wd, mu, lr : scalars of w's dtype
    """
    m = _scratch_size(pre.shape[0], w.shape[1])
    for n in prange(w.shape[0]):
        scratch = np.empty(m, w.dtype)            # per row: only R outside (2, 3) uses it
        _sgd_row(w[n], buf[n], ut[n], pre, sign, wd, mu, lr, scratch)


# -- the SGD step fused with the next forward pass (B = 1, 2: one pass over W per sample) -------------
@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
def _products(x, row, a, n):
    """a[r, n] = x[r] · row for every row r of x, the sums reassociated so that they vectorise (as
    BLAS sums a GEMV's products); three rows of x per pass over the row.  Each sum starts from its
    first product (a sum started from a zero of the row's dtype, row[0] * 0, did not vectorise as well:
    2x the time)."""
    n_in, m = row.shape[0], x.shape[0]
    r = 0
    while r + 3 <= m:
        w0 = row[0]
        s0, s1, s2 = x[r, 0] * w0, x[r + 1, 0] * w0, x[r + 2, 0] * w0
        for k in range(1, n_in):
            wk = row[k]
            s0 += x[r, k] * wk
            s1 += x[r + 1, k] * wk
            s2 += x[r + 2, k] * wk
        a[r, n], a[r + 1, n], a[r + 2, n] = s0, s1, s2
        r += 3
    while r < m:
        s0 = x[r, 0] * row[0]
        for k in range(1, n_in):
            s0 += x[r, k] * row[k]
        a[r, n] = s0
        r += 1


@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
def _sgd_products_3(w, buf, ut, pre, sign, wd, mu, lr, x, a, n):
    """Row n of :func:`sgd_low_rank_forward` for R = 3 terms and 3 rows of x (B = 1, two pairs,
    refreshed: the default of ``threefactor train --mode online --streams 1``) in one loop: each new
    weight is multiplied with the three inputs as it is written.  The step's arithmetic is
    :func:`_sgd_row`'s, with reassociation (so that the three sums vectorise) and fused multiply-adds
    allowed: the same step up to float rounding, 25 % faster than without them (3 layers of the
    Table 1 MLP, one core)."""
    row, brow, c = w[n], buf[n], ut[n]
    c0, c1, c2 = c[0], c[1], c[2]
    p0, p1, p2 = pre[0], pre[1], pre[2]
    x0, x1, x2 = x[0], x[1], x[2]
    s0 = s1 = s2 = np.float32(0)           # typed as the products (float32 or float64)
    for k in range(row.shape[0]):
        wk = row[k]
        d = sign * (c0 * p0[k] + c1 * p1[k] + c2 * p2[k]) + wd * wk
        b = brow[k] * mu + d
        brow[k] = b
        wk = wk - lr * b
        row[k] = wk
        s0 += x0[k] * wk
        s1 += x1[k] * wk
        s2 += x2[k] * wk
    a[0, n], a[1, n], a[2, n] = s0, s1, s2


@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
def _sgd_products_2(w, buf, ut, pre, sign, wd, mu, lr, x, a, n):
    """:func:`_sgd_products_3` for R = 2 terms and 2 rows of x (B = 1, one pair, refreshed)."""
    row, brow, c = w[n], buf[n], ut[n]
    c0, c1 = c[0], c[1]
    p0, p1 = pre[0], pre[1]
    x0, x1 = x[0], x[1]
    s0 = s1 = np.float32(0)
    for k in range(row.shape[0]):
        wk = row[k]
        d = sign * (c0 * p0[k] + c1 * p1[k]) + wd * wk
        b = brow[k] * mu + d
        brow[k] = b
        wk = wk - lr * b
        row[k] = wk
        s0 += x0[k] * wk
        s1 += x1[k] * wk
    a[0, n], a[1, n] = s0, s1


@njit(cache=True, fastmath=False, nogil=True)
def _sgd_forward_row(n, w, buf, ut, pre, sign, wd, mu, lr, scratch, x, a):
    """Row n of :func:`sgd_low_rank_forward`: the SGD step of the row, and a[:, n] = x · w[n] with the
    new row (in the same loop for R = m = 3 and R = m = 2; otherwise :func:`sgd_low_rank`'s step, then
    the products while the row is in the L1 cache)."""
    r_all, m = pre.shape[0], x.shape[0]
    if r_all == 3 and m == 3:
        _sgd_products_3(w, buf, ut, pre, sign, wd, mu, lr, x, a, n)
    elif r_all == 2 and m == 2:
        _sgd_products_2(w, buf, ut, pre, sign, wd, mu, lr, x, a, n)
    else:
        row = w[n]
        _sgd_row(row, buf[n], ut[n], pre, sign, wd, mu, lr, scratch)
        _products(x, row, a, n)


@njit(cache=True, fastmath=False, nogil=True)
def sgd_low_rank_forward_serial(w, buf, ut, pre, sign, wd, mu, lr, x, a):
    """:func:`sgd_low_rank_forward` on one thread."""
    scratch = np.empty(_scratch_size(pre.shape[0], w.shape[1]), w.dtype)
    for n in range(w.shape[0]):
        _sgd_forward_row(n, w, buf, ut, pre, sign, wd, mu, lr, scratch, x, a)


@njit(cache=True, parallel=True, fastmath=False, nogil=True)
def sgd_low_rank_forward(w, buf, ut, pre, sign, wd, mu, lr, x, a):
    """:func:`sgd_low_rank` and then the next forward pass a = x wᵀ, in the same pass over W.

    Each row of W is updated (its SGD step with g = ut · pre, as :func:`sgd_low_rank`) and, while it
    is in the L1 cache, multiplied with the m rows of x: a[:, n] = x · w[n] with the updated w[n].
    At B = 1 the next step's forward pass (x_{t+1} and, refreshed, x_t, x_{t-1}) otherwise reads W
    once more.  The dot products are summed reassociated (vectorised), so a differs from BLAS's x wᵀ
    by float rounding only.

    Parameters
    ----------
    w, buf, ut, pre, sign, wd, mu, lr : as :func:`sgd_low_rank`
    x : (m, n_in) the next step's inputs, C-contiguous
    a : (m, n_out) written: the pre-activations x wᵀ with the updated W
    """
    m = _scratch_size(pre.shape[0], w.shape[1])
    for n in prange(w.shape[0]):
        scratch = np.empty(m, w.dtype)
        _sgd_forward_row(n, w, buf, ut, pre, sign, wd, mu, lr, scratch, x, a)
