"""The Numba backend: the fast CPU path, tested against the numpy reference.

Same primitives as :class:`~threefactor.backends.numpy.NumpyBackend`; each is
BLAS GEMMs (numpy ``@``) plus at most one fused, parallel Numba pass over its
arrays (:mod:`._numba_kernels`), never an (m, m, n) intermediate.  float32 in
gives float32 work and results, float64 gives float64.

The non-Gaussian kernels (cosine, linear) and the label kernel use the
inherited numpy code: their cost is the GEMMs numpy already hands to BLAS.

Shapes: x (m, n_in), w (n_out, n_in), z / a / fp (m, n_out), u / v (m, c),
K / A / Ky (m, m).
"""
from __future__ import annotations

import numpy as np

from . import _numba_kernels as _k
from ..activations import SELU_ALPHA, SELU_SCALE
from ..rules import ACTIVATIONS, choice_error
from .numpy import NumpyBackend

_ACTIVATION_CODE = {"linear": _k.LINEAR, "relu": _k.RELU, "lrelu": _k.LRELU, "selu": _k.SELU}


def _float_array(a, name):
    """``a`` as a C-contiguous float32/float64 array (others become float64)."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _same_dtype(dtype, *arrays):
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


class NumbaBackend(NumpyBackend):
    """Fused Numba kernels around BLAS GEMMs; numpy arrays in and out."""

    name = "numba"
    xp = np

    # -- primitives -----------------------------------------------------
    def forward(self, x, w, activation, slope):
        """a = x wᵀ (one GEMM), then z = f(a) and f'(a) in one fused pass.  Returns (a, z, fp)."""
        code = _ACTIVATION_CODE.get(activation)
        if code is None:
            raise choice_error("activation", activation, ACTIVATIONS)
        a = _float_array(self.matmul(x, w.T), "a")
        t = a.dtype.type
        z = np.empty_like(a)
        fp = np.empty_like(a)
        _k.activate(a, code, t(slope), t(SELU_SCALE), t(SELU_SCALE * SELU_ALPHA), z, fp)
        return a, z, fp

    def group_stats(self, z, groups, p, delta):
        """ẑ (m, n), u (m, c), v (m, c) of Eq. 17-18 in one pass per sample."""
        z = _float_array(z, "z")
        m, n = z.shape
        if groups < 1 or n % groups:
            raise ValueError(f"groups={groups} does not divide the layer width n_out={n}")
        t = z.dtype.type
        zhat = np.empty_like(z)
        u = np.empty((m, groups), dtype=z.dtype)
        v = np.empty((m, groups), dtype=z.dtype)
        _k.group_stats(z, t(delta), t(1 - p), zhat, u, v)
        return zhat, u, v

    def divisive_norm(self, zhat, u, p):
        """r = ẑ / u^p (Eq. 21), one fused pass."""
        zhat = _float_array(zhat, "zhat")
        (u,) = _same_dtype(zhat.dtype, u)
        r = np.empty_like(zhat)
        _k.divisive_norm(zhat, u, zhat.dtype.type(p), r)
        return r

    def gaussian_kernel(self, v, sigma):
        """K_ij = exp(-‖v_i - v_j‖² / 2σ²) (Eq. 26): the GEMM v vᵀ, then one fused pass."""
        v = _float_array(v, "v")
        G = v @ v.T
        m = v.shape[0]
        K = np.empty((m, m), dtype=v.dtype)
        ksum = np.empty(m, dtype=np.float64)
        _k.gaussian_from_gram(G, v.dtype.type(-0.5 / sigma ** 2), K, ksum)
        return K

    def gaussian_weights(self, K, Ky, gamma):
        """A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b times σ²): one reduction pass, one fused pass."""
        K = _float_array(K, "K")
        (Ky,) = _same_dtype(K.dtype, Ky)
        m = K.shape[0]
        m2 = K.shape[0] * K.shape[1]
        sums = np.empty((m, 2), dtype=np.float64)
        _k.row_sums2(K, Ky, sums)
        kbar, kybar = sums.sum(axis=0) / m2
        t = K.dtype.type
        A = np.empty_like(K)
        _k.gaussian_weights(K, Ky, t(kbar), t(kybar), t(gamma), t(m2), A)
        return A

    def laplacian(self, A, v):
        """L_A v = diag(A·1) v - A v: one GEMM (m, m) × (m, d), then one fused pass."""
        v = _float_array(v, "v")
        (A,) = _same_dtype(v.dtype, A)
        av = np.ascontiguousarray(self.matmul(A, v))
        rs = np.empty(A.shape[0], dtype=v.dtype)
        _k.laplacian_finish(A, v, av, rs)
        return av

    def post_plain(self, neg_dz, fp, scale):
        """Post-synaptic term scale · (-dL/dz) ⊙ f'(a) (Eq. 41), one pass."""
        neg_dz = _float_array(neg_dz, "neg_dz")
        (fp,) = _same_dtype(neg_dz.dtype, fp)
        post = np.empty_like(neg_dz)
        _k.post_plain(neg_dz, fp, neg_dz.dtype.type(scale), post)
        return post

    def post_grouped(self, neg_dv, zhat, u, fp, p, scale):
        """Post-synaptic term of the grouped rule (Eq. 47-48), one fused pass:
        scale · 2(1-p)/g · (-dv_α + mean_α dv) · ẑ_αn / u_α^p · f'_n."""
        zhat = _float_array(zhat, "zhat")
        neg_dv, u, fp = _same_dtype(zhat.dtype, neg_dv, u, fp)
        m, n = zhat.shape
        c = u.shape[1]
        t = zhat.dtype.type
        coef = np.empty((m, c), dtype=zhat.dtype)
        post = np.empty_like(zhat)
        _k.post_grouped(neg_dv, zhat, u, fp, t(p), t(scale), t(2.0 * (1 - p) / (n // c)), coef, post)
        return post
