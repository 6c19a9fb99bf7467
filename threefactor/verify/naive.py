"""The naive definitions: literal pair sums, slow and obviously right (tests only).

Every fast path is tested against these.  Nothing here uses the GEMM tricks of
the engine: kernels are evaluated pair by pair and the updates are the sums
over all ordered pairs (i, j) written in the paper.

    plain Gaussian (Eq. 12)   ΔW_nk = Σ_ij M_ij (z_in - z_jn)(f'_in x_ik - f'_jn x_jk)
    grouped (Eq. 22, 47-48)   ΔW_nk = Σ_ij M_α(n),ij (h_in x_ik - h_jn x_jk),  h = f' ⊙ ẑ/u^p

The objective here works for complex inputs too, so :mod:`threefactor.check`
can differentiate it by the complex step.
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.activations import activate
from threefactor.rule.kernels import kernel_object


def representation(x, w, rule):
    """(z, fp, zhat, u, v) by the definitions Eq. 1, 17, 18, sample by sample."""
    a = x @ w.T
    z, fp = activate(a, rule.activation, rule.slope, np)
    if rule.groups is None:
        return z, fp, None, None, z
    m, n = z.shape
    c = rule.groups
    g = n // c
    zhat = np.empty_like(z)
    u = np.empty((m, c), dtype=z.dtype)
    for i in range(m):
        for al in range(c):
            block = z[i, al * g:(al + 1) * g]
            zh = block - sum(block) / g
            zhat[i, al * g:(al + 1) * g] = zh
            u[i, al] = (rule.delta + sum(zh * zh)) / g
    s = u ** (1 - rule.p)
    v = s - s.sum(axis=1, keepdims=True) / c
    return z, fp, zhat, u, v


def kernel_value(a, b, rule, kernel=None):
    """k(a, b) for one pair (Eq. 24-26): the kernel's literal ``pair`` definition
    (:meth:`threefactor.Kernel.pair`; for a kernel without one, ``matrix`` of the two rows)."""
    kernel = kernel_object(rule, checked=False) if kernel is None else kernel
    pair = getattr(kernel, "pair", None)
    if pair is None:
        return kernel.matrix(np.stack([a, b]), np)[0, 1]
    return pair(a, b, np)


def kernel_matrix(v, rule):
    """K (m, m) pair by pair, from whatever kernel the rule names."""
    m = v.shape[0]
    kernel = kernel_object(rule, checked=False)
    K = np.empty((m, m), dtype=v.dtype)
    for i in range(m):
        for j in range(m):
            K[i, j] = kernel_value(v[i], v[j], rule, kernel)
    return K


def label_kernel(labels, n_classes, rule):
    """Ky (m, m) pair by pair: Eq. 35 (cosine) or Eq. 36 (linear, batch frequencies)."""
    m = len(labels)
    onehot = np.eye(n_classes)[labels]
    if rule.label_kernel == "cosine":
        c = onehot - 1.0 / n_classes
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    else:
        c = onehot - onehot.mean(axis=0)
    return np.array([[c[i] @ c[j] for j in range(m)] for i in range(m)])


def phsic(Ka, Kb):
    """pHSIC of Eq. 34 as the two literal double sums."""
    m = Ka.shape[0]
    first = sum(Ka[i, j] * Kb[i, j] for i in range(m) for j in range(m)) / m ** 2
    return first - (sum(Ka.ravel()) / m ** 2) * (sum(Kb.ravel()) / m ** 2)


def objective(x, w, labels, n_classes, rule):
    """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) by the definitions (complex-step safe)."""
    *_, v = representation(x, w, rule)
    K = kernel_matrix(v, rule)
    Ky = label_kernel(labels, n_classes, rule)
    return phsic(K, K) - rule.gamma * phsic(Ky, K)


def third_factor(x, w, labels, n_classes, rule):
    """M of Eq. 12b (m, m) or Eq. 22 / 47 (c, m, m), entry by entry."""
    *_, v = representation(x, w, rule)
    K = kernel_matrix(v, rule)
    Ky = label_kernel(labels, n_classes, rule)
    m = K.shape[0]
    kz = K - K.sum() / m ** 2
    ky = Ky - Ky.sum() / m ** 2
    base = (2 * kz - rule.gamma * ky) * K / (rule.sigma ** 2 * m ** 2)
    if rule.groups is None:
        return base
    g = w.shape[0] // rule.groups
    M = np.empty((rule.groups, m, m), dtype=base.dtype)
    for al in range(rule.groups):
        for i in range(m):
            for j in range(m):
                M[al, i, j] = base[i, j] * 2 * (1 - rule.p) / g * (v[i, al] - v[j, al])
    return M


def pairwise_update(x, w, labels, n_classes, rule):
    """ΔW as the literal sum over all ordered pairs (i, j) of Eq. 12 / Eq. 22."""
    z, fp, zhat, u, _ = representation(x, w, rule)
    M = third_factor(x, w, labels, n_classes, rule)
    m = x.shape[0]
    dw = np.zeros(w.shape, dtype=np.result_type(x, w))
    if rule.groups is None:
        for i in range(m):
            for j in range(m):
                dw += M[i, j] * ((z[i] - z[j])[:, None]
                                 * (fp[i][:, None] * x[i][None, :] - fp[j][:, None] * x[j][None, :]))
        return dw
    g = w.shape[0] // rule.groups
    group_of = np.arange(w.shape[0]) // g
    h = fp * zhat / np.repeat(u ** rule.p, g, axis=1)
    for i in range(m):
        for j in range(m):
            mij = M[group_of, i, j]
            dw += mij[:, None] * (h[i][:, None] * x[i][None, :] - h[j][:, None] * x[j][None, :])
    return dw
