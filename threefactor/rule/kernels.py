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

from threefactor.rule.rules import COSINE_EPS


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


class UserKernel:
    """A user's kernel object, its results checked before the engine uses them.

    ``matrix`` must give an (m, m) array and ``pullback`` an (m, d) one, finite; both are
    returned in v's dtype (so float32 in stays float32 out on every backend).  A wrong shape
    would otherwise broadcast silently (numpy) or be read past its end (compiled kernels).
    NaN or Inf from a finite v is an error naming the method (from a non-finite v it is left
    for the caller's input checks to report).  On a GPU the finiteness check reads a flag back
    (user kernels only).
    """

    def __init__(self, kernel):
        self.kernel = kernel

    def _checked(self, method, result, shape, v, xp):
        name = f"{type(self.kernel).__name__}.{method}"
        if not hasattr(result, "shape") or not hasattr(result, "dtype"):
            raise TypeError(f"kernel {name} must return an array of shape {shape}, got {type(result).__name__}")
        if tuple(result.shape) != shape:
            raise ValueError(f"kernel {name} returned shape {tuple(result.shape)}; expected {shape} "
                             f"for v of shape {tuple(v.shape)}")
        if getattr(result.dtype, "kind", "f") not in "biuf":
            raise TypeError(f"kernel {name} must return real numbers, got dtype {result.dtype}")
        result = xp.asarray(result, dtype=v.dtype)
        if not bool(xp.isfinite(result).all()) and bool(xp.isfinite(v).all()):   # else the inputs are to blame,
            raise ValueError(f"kernel {name} returned NaN or Inf (v is finite)")    # which the caller reports
        return result

    def matrix(self, v, xp=np):
        m = v.shape[0]
        return self._checked("matrix", self.kernel.matrix(v, xp), (m, m), v, xp)

    def pullback(self, v, K, C, xp=np):
        return self._checked("pullback", self.kernel.pullback(v, K, C, xp), tuple(v.shape), v, xp)


def kernel_object(rule):
    """The kernel object of a :class:`~threefactor.rules.Rule` (a user's object wrapped in
    :class:`UserKernel`, which checks what it returns)."""
    k = rule.kernel
    if k == "gaussian":
        return Gaussian(rule.sigma)
    if k == "cosine":
        return Cosine(rule.cosine_eps)
    if k == "linear":
        return Linear()
    return UserKernel(k)


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
