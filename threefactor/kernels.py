"""Kernel matrices on representations and on labels, with their pull-backs.

Representation kernels (Eq. 24-26) on v of shape (m, d)::

    linear    k(a, b) = aᵀb                                   (Eq. 24)
    cosine    k(a, b) = aᵀb / (‖a‖_ε ‖b‖_ε)                     (Eq. 25)
    gaussian  k(a, b) = exp(-‖a - b‖² / 2σ²)                   (Eq. 26)

with the smoothed norm ‖a‖_ε = sqrt(‖a‖² + ε²) (ε = ``Rule.cosine_eps``):
an all-zero row is similar to nothing and has a finite gradient.

A *pull-back* maps C = dL/dK (m, m, symmetric) to dL/dv (m, d).  Any object
with these two methods is a kernel threefactor can train and check::

    class MyKernel:
        def matrix(self, v, xp):          # (m, d) -> (m, m)
            ...
        def pullback(self, v, K, C, xp):  # -> dL/dv, (m, d)
            ...

Label kernels (Eq. 35-36) compare one-hot labels: centred cosine gives 1 for
equal labels and -1/(n-1) otherwise; centred linear gives
1[y_i = y_j] + Σ_k p_k² - p_{y_i} - p_{y_j} with class frequencies p.
"""
from __future__ import annotations

import numpy as np

from .rules import COSINE_EPS


def sq_distances(v, xp=np):
    """Squared distances ‖v_i - v_j‖² (m, m) from one GEMM, clamped at 0, zero diagonal."""
    sq = (v * v).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
    d = xp.maximum(d, 0) if not xp.iscomplexobj(d) else d
    m = d.shape[0]
    d[xp.arange(m), xp.arange(m)] = 0
    return d


class Gaussian:
    """Gaussian kernel exp(-‖a - b‖²/2σ²) (Eq. 26); pull-back Eq. 41-42."""

    def __init__(self, sigma=5.0):
        self.sigma = float(sigma)

    def matrix(self, v, xp=np):
        return xp.exp(sq_distances(v, xp) * (-0.5 / self.sigma ** 2))

    def pullback(self, v, K, C, xp=np):
        # dL/dv_i = -(2/σ²) Σ_j C_ij K_ij (v_i - v_j) = -(2/σ²) (L_A v)_i, A = C ⊙ K
        A = C * K
        return (-2.0 / self.sigma ** 2) * (A.sum(axis=1)[:, None] * v - A @ v)


class Cosine:
    """Cosine similarity aᵀb / (‖a‖_ε ‖b‖_ε) (Eq. 25); pull-back Eq. 49-54."""

    def __init__(self, eps=COSINE_EPS):
        self.eps = float(eps)

    def _unit(self, v, xp):
        norm = xp.sqrt((v * v).sum(axis=1) + self.eps ** 2)
        return v / norm[:, None], norm

    def matrix(self, v, xp=np):
        e, _ = self._unit(v, xp)
        return e @ e.T

    def pullback(self, v, K, C, xp=np):
        e, norm = self._unit(v, xp)
        ge = 2.0 * (C @ e)                       # dL/de, C symmetric
        radial = (ge * e).sum(axis=1)[:, None]
        return (ge - radial * e) / norm[:, None]


class Linear:
    """Linear kernel aᵀb (Eq. 24); pull-back Eq. 56."""

    def matrix(self, v, xp=np):
        return v @ v.T

    def pullback(self, v, K, C, xp=np):
        return 2.0 * (C @ v)


def kernel_object(rule):
    """The kernel object of a :class:`~threefactor.rules.Rule` (a user's object as is)."""
    k = rule.kernel
    if k == "gaussian":
        return Gaussian(rule.sigma)
    if k == "cosine":
        return Cosine(rule.cosine_eps)
    if k == "linear":
        return Linear()
    return k


def label_kernel(labels, n_classes, kind="cosine", dtype=np.float64, xp=np):
    """Centred label kernel (m, m) from integer labels (m,).

    ``kind="cosine"``: Eq. 35, 1 if y_i = y_j else -1/(n-1).
    ``kind="linear"``: Eq. 36 with class frequencies p estimated on the batch.
    """
    same = labels[:, None] == labels[None, :]
    if kind == "cosine":
        off = -1.0 / (n_classes - 1)
        return xp.where(same, xp.asarray(1.0, dtype=dtype), xp.asarray(off, dtype=dtype))
    counts = xp.bincount(labels, minlength=n_classes).astype(dtype)
    freq = counts / labels.shape[0]
    pl = freq[labels]
    return same.astype(dtype) + (freq * freq).sum() - pl[:, None] - pl[None, :]
