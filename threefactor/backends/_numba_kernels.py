"""Fused Numba kernels behind :class:`threefactor.backends.numba.NumbaBackend`.

Each kernel is one pass over the rows of its arrays (``prange`` over samples
i), writing into output arrays that the caller allocates; GEMMs stay with
BLAS, and so do short reductions that numpy or BLAS vectorise and a loop
without ``fastmath`` cannot (the group sums of Eq. 17: a GEMV and an einsum);
transcendental functions over whole arrays (exp, pow) stay with numpy's
vectorised loops, several times faster than scalar libm calls from a loop
(the kernels then take exp(·) or u^p as inputs).

Kernels compute in the dtype of their arrays: every scalar they are given is
already of that dtype (float32 in, float32 work).  ``fastmath`` is off (two
exceptions, both only reordering sums: the group moments of :func:`group_moments` and the
float64 sums of the logged objective, :func:`objective_sums`), so the compiler may not
reorder sums elsewhere; a short sum uses eight interleaved partial
sums in the array dtype, combined as numpy's pairwise summation combines
them, and row sums of (m, m) matrices are accumulated in float64.

Shapes: a / z / fp / zhat / post / r (m, n), u / up / dv (m, c), K / Ky / A / G (m, m).
"""
from __future__ import annotations

from numba import njit, prange

_JIT = dict(cache=True, parallel=True, fastmath=False, nogil=True)
_SERIAL = dict(cache=True, fastmath=False, nogil=True)

#: Activation codes of :func:`activate` (the order of ``rules.ACTIVATIONS``).
LINEAR, RELU, LRELU, SELU = 0, 1, 2, 3


@njit(**_SERIAL)
def _sum8(a, j0, n):
    """Σ_k a[j0 + k], k < n, with eight partial sums in a's dtype (numpy's pairwise block)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = a[j0] - a[j0]
    k = 0
    while k + 8 <= n:
        s0 += a[j0 + k]
        s1 += a[j0 + k + 1]
        s2 += a[j0 + k + 2]
        s3 += a[j0 + k + 3]
        s4 += a[j0 + k + 4]
        s5 += a[j0 + k + 5]
        s6 += a[j0 + k + 6]
        s7 += a[j0 + k + 7]
        k += 8
    t = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    while k < n:
        t += a[j0 + k]
        k += 1
    return t


@njit(**_SERIAL)
def _row_sum64(a, n):
    """Σ_k a[k], k < n, in float64 with four partial sums."""
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= n:
        s0 += a[k]
        s1 += a[k + 1]
        s2 += a[k + 2]
        s3 += a[k + 3]
        k += 4
    while k < n:
        s0 += a[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(**_SERIAL)
def _activate_row(ai, zi, fi, ei, code, slope, scale, alpha_scale):
    """One row of :func:`activate`."""
    n = ai.shape[0]
    if code == RELU:
        for j in range(n):
            x = ai[j]
            if x > 0:
                zi[j] = x
                fi[j] = 1
            else:
                zi[j] = 0
                fi[j] = 0
    elif code == LRELU:
        for j in range(n):
            x = ai[j]
            if x > 0:
                zi[j] = x
                fi[j] = 1
            else:
                zi[j] = slope * x
                fi[j] = slope
    elif code == SELU:
        for j in range(n):
            x = ai[j]
            if x > 0:
                zi[j] = scale * x
                fi[j] = scale
            else:
                t = alpha_scale * ei[j]
                zi[j] = t - alpha_scale
                fi[j] = t
    else:
        for j in range(n):
            zi[j] = ai[j]
            fi[j] = 1


@njit(**_JIT)
def activate(a, code, slope, scale, alpha_scale, e, z, fp):
    """z = f(a) and fp = f'(a) in one pass.

    ``slope``: lrelu's negative slope; SELU: ``scale``, ``alpha_scale`` = scale·alpha
    and ``e`` = exp(min(a, 0)) (unused otherwise).
    """
    for i in prange(a.shape[0]):
        _activate_row(a[i], z[i], fp[i], e[i], code, slope, scale, alpha_scale)


@njit(cache=True, parallel=True, nogil=True, fastmath={"reassoc"})
def group_moments(a, code, slope, scale, alpha_scale, e, activated, delta, gd, z, fp, zhat, u):
    """ẑ_αn = z_αn - mean_n z_αn and u_α = (δ + Σ_n ẑ²_αn) / g (Eq. 17), one pass per sample
    (``gd`` = g in the dtype).  Unless ``activated`` (z given), each row first gets
    z = f(a), fp = f'(a) as in :func:`activate`, so ẑ is formed while the row is in cache.

    The one kernel besides :func:`objective_sums` whose sums the compiler may reorder
    (``reassoc``: the two sums per group vectorise, 2x faster); its elementwise arithmetic
    is as written, and the activation is :func:`_activate_row`'s (compiled without it).
    """
    m, n = z.shape
    c = u.shape[1]
    g = n // c
    for i in prange(m):
        zi, hi, ui = z[i], zhat[i], u[i]
        if not activated:
            _activate_row(a[i], zi, fp[i], e[i], code, slope, scale, alpha_scale)
        for al in range(c):
            zs, hs = zi[al * g:(al + 1) * g], hi[al * g:(al + 1) * g]
            s = gd - gd
            for k in range(g):
                s += zs[k]
            mv = s / gd
            q = gd - gd
            for k in range(g):
                h = zs[k] - mv
                hs[k] = h
                q += h * h
            ui[al] = (delta + q) / gd


@njit(**_JIT)
def divide_groups(zhat, up, mask, masked, r):
    """r_αn = ẑ_αn / up_α with up = u^p: divisive normalisation (Eq. 21); if ``masked``,
    times the dropout mask (m, n) in the same pass (r = (ẑ / u^p) · mask, two roundings
    as the separate multiply would make)."""
    m, n = zhat.shape
    c = up.shape[1]
    g = n // c
    for i in prange(m):
        hi, ri, mi = zhat[i], r[i], mask[i]
        for al in range(c):
            d = up[i, al]
            j0 = al * g
            if masked:
                for k in range(g):
                    ri[j0 + k] = (hi[j0 + k] / d) * mi[j0 + k]
            else:
                for k in range(g):
                    ri[j0 + k] = hi[j0 + k] / d


@njit(**_JIT)
def gaussian_exponent(G, dg, coef, E):
    """E_ij = coef · max(G_ii + G_jj - 2 G_ij, 0), E_ii = 0: the exponent of Eq. 26 from the Gram
    matrix, with its diagonal ``dg`` (m,) as a contiguous copy (read along every row)."""
    m = G.shape[0]
    zero = coef - coef
    for i in prange(m):
        gi = dg[i]
        Gi, Ei = G[i], E[i]
        for j in range(m):
            d = (gi + dg[j]) - (Gi[j] + Gi[j])
            if d < zero:
                d = zero
            Ei[j] = d * coef
        Ei[i] = zero


@njit(**_JIT)
def label_kernel_cosine(labels, off, Ky):
    """Ky_ij = 1 if labels_i = labels_j else ``off`` (Eq. 35)."""
    m = labels.shape[0]
    for i in prange(m):
        li, Ki = labels[i], Ky[i]
        for j in range(m):
            if labels[j] == li:
                Ki[j] = 1
            else:
                Ki[j] = off


@njit(**_JIT)
def gaussian_weights(K, Ky, kbar, kybar, gamma, m2, A):
    """A_ij = (2 (K_ij - K̄) - γ (Ky_ij - Ky̅)) / m² · K_ij (Eq. 12b times σ²)."""
    m, n = K.shape
    for i in prange(m):
        Ki, Yi, Ai = K[i], Ky[i], A[i]
        for j in range(n):
            kc = Ki[j] - kbar
            Ai[j] = ((kc + kc) - gamma * (Yi[j] - kybar)) / m2 * Ki[j]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def objective_sums(K, Ky, gamma):
    """(Σ K, Σ Ky, Σ K ⊙ (K - γ Ky)) over two C-contiguous (m, m) matrices in one pass, in
    float64: the layer objective's sums (Eq. 9).  Like :func:`group_moments` it lets the compiler
    reorder its sums (``reassoc``, so they vectorise: 6x faster): float64 sums of float32
    terms, for a logged value; the last bits may differ between CPUs of different vector widths."""
    k, y = K.ravel(), Ky.ravel()
    g = float(gamma)
    a = b = d = 0.0
    for j in range(k.shape[0]):
        kj, yj = float(k[j]), float(y[j])
        a += kj
        b += yj
        d += kj * (kj - g * yj)
    return a, b, d


@njit(**_SERIAL)
def _off_diagonal_sum64(a, i, n):
    """Σ_{k≠i} a[k], k < n, in float64: a row sum of an (m, m) matrix without its diagonal entry a[i]."""
    return _row_sum64(a[:i], i) + _row_sum64(a[i + 1:], n - i - 1)


@njit(**_JIT)
def off_diagonal(A, B, rs):
    """B = A with B_ii = 0, and rs (m,) = B·1, i.e. rs_i = Σ_{j≠i} A_ij (float64 sums).

    For :func:`laplacian_finish`: the GEMM B v then never sees A's diagonal."""
    m, n = A.shape
    for i in prange(m):
        Ai, Bi = A[i], B[i]
        rs[i] = _off_diagonal_sum64(Ai, i, n)
        for j in range(n):
            Bi[j] = Ai[j]
        Bi[i] = 0


@njit(**_JIT)
def laplacian_finish(rs, v, bv):
    """bv <- diag(rs) v - bv in place, where bv = B v came from BLAS and rs = B·1 (:func:`off_diagonal`)."""
    m, d = v.shape
    for i in prange(m):
        r = rs[i]
        vi, oi = v[i], bv[i]
        for k in range(d):
            oi[k] = r * vi[k] - oi[k]


@njit(**_JIT)
def laplacian_matrix(A, L):
    """L = diag(B·1) - B with B = A off its diagonal: the graph Laplacian L_A itself, its diagonal
    L_ii = Σ_{j≠i} A_ij (a float64 sum that never reads A_ii; L_A ignores A's diagonal)."""
    m, n = A.shape
    for i in prange(m):
        Ai, Li = A[i], L[i]
        s = _off_diagonal_sum64(Ai, i, n)
        for j in range(n):
            Li[j] = -Ai[j]
        Li[i] = s


@njit(**_JIT)
def post_plain(neg_dz, fp, scale, post):
    """post = (scale · (-dL/dz)) ⊙ f'(a) (Eq. 41)."""
    m, n = neg_dz.shape
    for i in prange(m):
        di, fi, pi = neg_dz[i], fp[i], post[i]
        for j in range(n):
            pi[j] = (scale * di[j]) * fi[j]


@njit(**_JIT)
def post_grouped(neg_dv, zhat, up, fp, scale, k2, cd, coef, post):
    """Grouped post-synaptic term (Eq. 43-44, 47-48) in one pass per sample::

        post_αn = k2 · (s dv_α - mean_β s dv_β) / u_α^p · ẑ_αn · f'_αn

    with s = ``scale``, dv = -dL/dv, up = u^p, k2 = 2(1-p)/g, ``cd`` = c in the dtype;
    ``coef`` (m, c) is scratch.
    """
    m, n = zhat.shape
    c = up.shape[1]
    g = n // c
    for i in prange(m):
        ci = coef[i]
        for al in range(c):
            ci[al] = scale * neg_dv[i, al]
        mean = _sum8(ci, 0, c) / cd
        hi, fi, pi = zhat[i], fp[i], post[i]
        for al in range(c):
            cf = k2 * (ci[al] - mean) / up[i, al]
            j0 = al * g
            for k in range(g):
                pi[j0 + k] = hi[j0 + k] * cf * fi[j0 + k]


@njit(cache=True, nogil=True)
def sgd_step(w, g, buf, sign, wd, mu, lr):
    """SGD with momentum in one pass over flat w, g, buf (scalars in their dtype): the same float
    operations in the same order as :meth:`NumpyBackend.sgd_step` (no FMA contraction without
    fastmath), so the same bits, without its temporaries."""
    for i in range(w.shape[0]):
        wi = w[i]
        d = sign * g[i] + wd * wi
        b = buf[i] * mu + d
        buf[i] = b
        w[i] = wi - lr * b
