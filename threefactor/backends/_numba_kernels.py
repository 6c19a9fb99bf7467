"""Fused Numba kernels behind :class:`threefactor.backends.numba.NumbaBackend`.

Each kernel is one parallel pass over the rows of its arrays (``prange`` over
samples i), writing into output arrays the caller allocates; the GEMMs stay
with BLAS.  Kernels compute in the dtype of their arrays: every scalar they
are given is already of that dtype (float32 in, float32 work).  Long sums are
accumulated in float64 with four interleaved partial sums (``fastmath`` is
off, so the compiler may not reorder them itself); a float64 sum is brought
back to the array dtype by storing it into a small scratch array of that
dtype.

Shapes: a / z / fp / zhat / post (m, n), u / v / dv (m, c), K / Ky / A / G (m, m).
"""
from __future__ import annotations

import math

from numba import njit, prange

_JIT = dict(cache=True, parallel=True, fastmath=False, nogil=True)
_SERIAL = dict(cache=True, fastmath=False, nogil=True)

#: Activation codes of :func:`activate` (the order of ``rules.ACTIVATIONS``).
LINEAR, RELU, LRELU, SELU = 0, 1, 2, 3


@njit(**_SERIAL)
def _row_sum(a, i, j0, n):
    """Σ_k a[i, j0 + k], k < n, in float64 with four partial sums."""
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= n:
        s0 += a[i, j0 + k]
        s1 += a[i, j0 + k + 1]
        s2 += a[i, j0 + k + 2]
        s3 += a[i, j0 + k + 3]
        k += 4
    while k < n:
        s0 += a[i, j0 + k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(**_JIT)
def activate(a, code, slope, scale, alpha_scale, z, fp):
    """z = f(a) and fp = f'(a) in one pass; slope (lrelu), scale and scale·alpha (SELU)."""
    m, n = a.shape
    for i in prange(m):
        if code == RELU:
            for j in range(n):
                x = a[i, j]
                if x > 0:
                    z[i, j] = x
                    fp[i, j] = 1
                else:
                    z[i, j] = 0
                    fp[i, j] = 0
        elif code == LRELU:
            for j in range(n):
                x = a[i, j]
                if x > 0:
                    z[i, j] = x
                    fp[i, j] = 1
                else:
                    z[i, j] = slope * x
                    fp[i, j] = slope
        elif code == SELU:
            for j in range(n):
                x = a[i, j]
                if x > 0:
                    z[i, j] = scale * x
                    fp[i, j] = scale
                else:
                    e = alpha_scale * math.exp(x)
                    z[i, j] = e - alpha_scale
                    fp[i, j] = e
        else:
            for j in range(n):
                z[i, j] = a[i, j]
                fp[i, j] = 1


@njit(**_JIT)
def group_stats(z, delta, q, zhat, u, v):
    """Eq. 17-18 per sample: ẑ = z - mean_n z, u = (δ + Σ_n ẑ²)/g, v = u^q - mean_α u^q.

    ``q`` = 1 - p; the number of groups c is ``u.shape[1]``; ``v`` doubles as
    scratch for u^q before it is centred.
    """
    m, n = z.shape
    c = u.shape[1]
    g = n // c
    for i in prange(m):
        tot = 0.0
        for al in range(c):
            j0 = al * g
            mu = _row_sum(z, i, j0, g) / g
            s0 = s1 = 0.0
            k = 0
            while k + 2 <= g:
                d0 = z[i, j0 + k] - mu
                d1 = z[i, j0 + k + 1] - mu
                zhat[i, j0 + k] = d0
                zhat[i, j0 + k + 1] = d1
                s0 += d0 * d0
                s1 += d1 * d1
                k += 2
            while k < g:
                d0 = z[i, j0 + k] - mu
                zhat[i, j0 + k] = d0
                s0 += d0 * d0
                k += 1
            u[i, al] = (delta + (s0 + s1)) / g
            v[i, al] = u[i, al] ** q
            tot += v[i, al]
        mean = tot / c
        for al in range(c):
            v[i, al] = v[i, al] - mean


@njit(**_JIT)
def divisive_norm(zhat, u, p, r):
    """r_αn = ẑ_αn / u_α^p (Eq. 21)."""
    m, n = zhat.shape
    c = u.shape[1]
    g = n // c
    for i in prange(m):
        for al in range(c):
            d = u[i, al] ** p
            j0 = al * g
            for k in range(g):
                r[i, j0 + k] = zhat[i, j0 + k] / d


@njit(**_JIT)
def gaussian_from_gram(G, coef, K, ksum):
    """K_ij = exp(coef · max(G_ii + G_jj - 2 G_ij, 0)), K_ii = 1 (Eq. 26), coef = -1/2σ².

    Also writes the row sums of K into ``ksum`` (m,) (float64).
    """
    m = G.shape[0]
    zero = coef - coef
    for i in prange(m):
        gi = G[i, i]
        for j in range(m):
            d = (gi + G[j, j]) - (G[i, j] + G[i, j])
            if d < zero:
                d = zero
            K[i, j] = math.exp(d * coef)
        K[i, i] = 1
        ksum[i] = _row_sum(K, i, 0, m)


@njit(**_JIT)
def row_sums2(K, Ky, out):
    """out[i] = (Σ_j K_ij, Σ_j Ky_ij) in float64, out (m, 2)."""
    m = K.shape[0]
    for i in prange(m):
        out[i, 0] = _row_sum(K, i, 0, m)
        out[i, 1] = _row_sum(Ky, i, 0, m)


@njit(**_JIT)
def gaussian_weights(K, Ky, kbar, kybar, gamma, m2, A):
    """A_ij = (2 (K_ij - K̄) - γ (Ky_ij - Ky̅)) / m² · K_ij (Eq. 12b times σ²)."""
    m = K.shape[0]
    for i in prange(m):
        for j in range(m):
            kc = K[i, j] - kbar
            A[i, j] = ((kc + kc) - gamma * (Ky[i, j] - kybar)) / m2 * K[i, j]


@njit(**_JIT)
def laplacian_finish(A, v, av, rs):
    """av <- diag(A·1) v - av in place, with av = A v from BLAS; rs (m,) gets A·1."""
    m, d = v.shape
    for i in prange(m):
        rs[i] = _row_sum(A, i, 0, A.shape[1])
        r = rs[i]
        for k in range(d):
            av[i, k] = r * v[i, k] - av[i, k]


@njit(**_JIT)
def post_plain(neg_dz, fp, scale, post):
    """post = (scale · (-dL/dz)) ⊙ f'(a) (Eq. 41)."""
    m, n = neg_dz.shape
    for i in prange(m):
        for j in range(n):
            post[i, j] = (scale * neg_dz[i, j]) * fp[i, j]


@njit(**_JIT)
def post_grouped(neg_dv, zhat, u, fp, p, scale, k2, coef, post):
    """Grouped post-synaptic term (Eq. 43-44, 47-48) in one pass per sample::

        post_αn = k2 · (s dv_α - mean_β s dv_β) / u_α^p · ẑ_αn · f'_αn

    with s = ``scale``, dv = -dL/dv, k2 = 2(1-p)/g; ``coef`` (m, c) is scratch.
    """
    m, n = zhat.shape
    c = u.shape[1]
    g = n // c
    for i in prange(m):
        tot = 0.0
        for al in range(c):
            coef[i, al] = scale * neg_dv[i, al]
            tot += coef[i, al]
        mean = tot / c
        for al in range(c):
            coef[i, al] = k2 * (coef[i, al] - mean) / u[i, al] ** p
            cf = coef[i, al]
            j0 = al * g
            for k in range(g):
                post[i, j0 + k] = zhat[i, j0 + k] * cf * fp[i, j0 + k]
