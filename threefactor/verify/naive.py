"""The naive definitions: literal pair sums and loops, slow and obviously right (tests and checks).

Every literal reference lives here: the dense rule (pair sums), the conv layer
(explicit convolution and pooling loops), batchnorm by its definition.

Every fast path is tested against these.  Nothing here uses the GEMM tricks of
the engine: kernels are evaluated pair by pair and the updates are the sums
over all ordered pairs (i, j) written in the paper.

    plain Gaussian (Eq. 12)   ΔW_nk = Σ_ij M_ij (z_in - z_jn)(f'_in x_ik - f'_jn x_jk)
    grouped (Eq. 22, 47-48)   ΔW_nk = Σ_ij M_α(n),ij (h_in x_ik - h_jn x_jk),  h = f' ⊙ ẑ/u^p

The objective here works for complex inputs too, so :mod:`threefactor.verify.gradcheck`
can differentiate it by the complex step; so can the conv objective
(:func:`conv_objective`) and :func:`batchnorm`.
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.activations import activate
from threefactor.rule.batchnorm import EPS as BN_EPS
from threefactor.rule.conv import conv_out_size
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


# -- batchnorm (threefactor.rule.batchnorm) by its definition --------------------------------

def batchnorm(a, gamma, beta, eps=BN_EPS):
    """BN of rows ``a`` (N, C) by the definition, complex-step safe (tests and checks)."""
    mean = a.sum(axis=0) / a.shape[0]
    d = a - mean
    var = (d * d).sum(axis=0) / a.shape[0]
    return d / np.sqrt(var + eps) * gamma + beta


# -- conv layers (threefactor.rule.conv, conv_rule): explicit loops ----------------------------


def conv2d(x, w, padding: int):
    """a[i, o, y, x] = Σ_c,dy,dx w[o, c, dy, dx] x_pad[i, c, y+dy, x+dx], one position at a time."""
    m, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_out_size(h, wd, kh, kw, padding)
    xpad = np.zeros((m, c, h + 2 * padding, wd + 2 * padding), dtype=np.result_type(x, w))
    xpad[:, :, padding:padding + h, padding:padding + wd] = x
    a = np.zeros((m, c_out, ho, wo), dtype=xpad.dtype)
    for oy in range(ho):
        for ox in range(wo):
            patch = xpad[:, :, oy:oy + kh, ox:ox + kw]
            a[:, :, oy, ox] = np.einsum("icyx,ocyx->io", patch, w)
    return a


def conv_patch(x, padding: int, kh: int, kw: int, i: int, oy: int, ox: int):
    """The receptive field x_pad[i, :, oy:oy+kh, ox:ox+kw] (C_in, kh, kw) of one position."""
    m, c, h, wd = x.shape
    xpad = np.zeros((c, h + 2 * padding, wd + 2 * padding), dtype=x.dtype)
    xpad[:, padding:padding + h, padding:padding + wd] = x[i]
    return xpad[:, oy:oy + kh, ox:ox + kw]


def max_pool2x2(z):
    """(pooled, (winner_y, winner_x)) window by window; winners are absolute positions."""
    m, c, h, w = z.shape
    h2, w2 = h // 2, w // 2
    pooled = np.zeros((m, c, h2, w2), dtype=z.dtype)
    wy = np.zeros((m, c, h2, w2), dtype=np.int64)
    wx = np.zeros((m, c, h2, w2), dtype=np.int64)
    for i in range(m):
        for o in range(c):
            for py in range(h2):
                for px in range(w2):
                    best = None
                    for dy in range(2):
                        for dx in range(2):
                            val = z[i, o, 2 * py + dy, 2 * px + dx]
                            if best is None or val.real > best.real:
                                best, by, bx = val, 2 * py + dy, 2 * px + dx
                    pooled[i, o, py, px], wy[i, o, py, px], wx[i, o, py, px] = best, by, bx
    return pooled, (wy, wx)



def conv_activity(x, w, rule, padding=1, pool=None, bn=None):
    """(z, f'(a), winners) by explicit loops; winners[(i, o, y', x')] = (y, x) of the conv grid.

    ``bn`` = (γ, β): batchnorm per channel over samples and positions before f
    (:func:`batchnorm`, batch statistics).
    """
    a = conv2d(x, w, padding)
    if bn is not None:
        m, c, ho, wo = a.shape
        rows = batchnorm(a.transpose(0, 2, 3, 1).reshape(-1, c), *bn)
        a = rows.reshape(m, ho, wo, c).transpose(0, 3, 1, 2)
    z, fp = activate(a, rule.activation, rule.slope, np)
    m, c, ho, wo = a.shape
    if pool is None:
        return z, fp, {(i, o, yy, xx): (yy, xx) for i in range(m) for o in range(c)
                       for yy in range(ho) for xx in range(wo)}
    zp, (wy, wx) = max_pool2x2(z)
    win = {k: (int(wy[k]), int(wx[k])) for k in np.ndindex(zp.shape)}
    fpp = np.array([fp[k[0], k[1], win[k][0], win[k][1]] for k in np.ndindex(zp.shape)]).reshape(zp.shape)
    return zp, fpp, win


def conv_objective(x, w, labels, n_classes, rule, padding=1, pool=None, bn=None):
    """L by the definitions (complex-step safe): loops for conv and pooling, pair sums for pHSIC
    (``bn`` = (γ, β): batchnorm before f, see :func:`conv_activity`)."""
    z, _, _ = conv_activity(x, w, rule, padding, pool, bn)
    zf = z.reshape(z.shape[0], -1)
    return objective(zf, np.eye(zf.shape[1]), labels, n_classes, rule.with_(activation="linear"))


def conv_update(x, w, labels, n_classes, rule, padding=1, pool=None):
    """ΔW as the literal pair sum over (i, j) of Eq. 12 / 22, each unit (channel, pooled position)
    contributing through its winner's patch, summed over positions (weight sharing).

    Gaussian kernel only (the 3-factor form); ΔW_o = Σ_ij Σ_pos M_ij (z_i - z_j)(f'_i x_i - f'_j x_j)
    (plain) or Σ_ij Σ_pos M_α,ij (h_i x_i - h_j x_j), h = f' ẑ/u^p (grouped), x = patch at the winner.
    """
    z, fp, win = conv_activity(x, w, rule, padding, pool)
    m = z.shape[0]
    kh, kw = w.shape[2:]
    zf, fpf = z.reshape(m, -1), fp.reshape(m, -1)
    lin = rule.with_(activation="linear")
    eye = np.eye(zf.shape[1])
    M = third_factor(zf, eye, labels, n_classes, lin)
    if rule.groups is not None:
        _, _, zhat, u, _ = representation(zf, eye, lin)
        g = zf.shape[1] // rule.groups
        h = fpf * zhat / np.repeat(u ** rule.p, g, axis=1)
    dw = np.zeros(w.shape, dtype=np.result_type(x, w))
    keys = list(np.ndindex(z.shape[1:]))
    for n, (o, py, px) in enumerate(keys):
        patch = [conv_patch(x, padding, kh, kw, i, *win[(i, o, py, px)]) for i in range(m)]
        for i in range(m):
            for j in range(m):
                if rule.groups is None:
                    dw[o] += M[i, j] * (zf[i, n] - zf[j, n]) * (fpf[i, n] * patch[i] - fpf[j, n] * patch[j])
                else:
                    dw[o] += M[n // g, i, j] * (h[i, n] * patch[i] - h[j, n] * patch[j])
    return dw
