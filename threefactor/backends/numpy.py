"""The numpy backend: the readable reference for every primitive.

A backend implements a few primitives, never whole rules; the engine
(:mod:`threefactor.engine`) composes them.  Faster backends (Numba, CuPy)
override the same method names and are tested against this one.

Shapes: x (m, n_in), w (n_out, n_in), z / a / fp (m, n_out), u / v (m, c),
K / A / Ky (m, m).
"""
from __future__ import annotations

import numpy as np

from threefactor.nn import dropout
from threefactor.rule import grouping
from threefactor.rule import kernels
from threefactor.rule import objective
from threefactor.rule.activations import activate
from threefactor.rule.third_factor import gaussian_weights as _gaussian_weights


class NumpyBackend:
    """Reference implementation of the primitives with numpy."""

    name = "numpy"
    xp = np

    # -- arrays ---------------------------------------------------------
    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def is_native(self, a):
        """Whether ``a`` is already an array of this backend."""
        return isinstance(a, np.ndarray)

    def synchronize(self):
        """Wait for queued work (a no-op on the CPU)."""

    def scalars(self, values):
        """The 0-d arrays (or numbers) ``values`` as one float64 numpy vector (on a device: one read-back)."""
        return np.asarray([np.asarray(v, dtype=np.float64) for v in values], dtype=np.float64).reshape(-1)

    # -- primitives -----------------------------------------------------
    def keep_mask(self, rng, shape, p, dtype):
        """Dropout keep mask (1 kept, 0 dropped, each unit dropped with probability p) from the
        numpy Generator ``rng``, as an array of ``dtype`` (:func:`threefactor.dropout.host_keep`)."""
        return self.keep_select(rng, shape, p, dtype, ((1, 0),))[0]

    def keep_select(self, rng, shape, p, dtype, pairs):
        """One dropout draw as several arrays of ``dtype``: for each (on, off) in ``pairs``, ``on``
        where the unit is kept and ``off`` where it is dropped (each dropped with probability p).
        The values are used as given (scalars of ``dtype``), so a mask costs one pass, not a
        0/1 mask and then arithmetic on it."""
        return dropout.host_select(rng, shape, p, dtype, pairs)

    def matmul(self, a, b, out=None):
        """Matrix product (BLAS GEMM), into ``out`` when given."""
        return a @ b if out is None else np.matmul(a, b, out=out)

    def forward(self, x, w, activation, slope):
        """a = x wᵀ (one GEMM), z = f(a), f'(a).  Returns (a, z, fp)."""
        a = self.matmul(x, w.T)
        z, fp = activate(a, activation, slope, np)
        return a, z, fp

    def group_stats(self, z, groups, p, delta):
        """ẑ (m, n), u (m, c), v (m, c) of Eq. 17-18."""
        return grouping.group_stats(z, groups, p, delta, np)

    def forward_grouped(self, x, w, activation, slope, groups, p, delta):
        """:meth:`forward` then :meth:`group_stats` (Eq. 17-18): (a, z, fp, ẑ, u, v).
        A backend may fuse the two (Numba: one pass over the rows)."""
        a, z, fp = self.forward(x, w, activation, slope)
        return (a, z, fp) + tuple(self.group_stats(z, groups, p, delta))

    def divisive_norm(self, zhat, u, p, mask=None):
        """r = ẑ / u^p (Eq. 21), times the dropout ``mask`` (m, n) if given."""
        r = grouping.divisive_norm(zhat, u, p, np)
        if mask is not None:
            r *= mask.reshape(r.shape)
        return r

    def gaussian_kernel(self, v, sigma):
        """K_ij = exp(-‖v_i - v_j‖² / 2σ²) (Eq. 26) from one GEMM."""
        return kernels.Gaussian(sigma).matrix(v, np)

    def gaussian_weights(self, K, Ky, gamma):
        """A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b times σ²)."""
        return _gaussian_weights(K, Ky, gamma)

    def laplacian(self, A, v):
        """(L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j): the graph Laplacian of A times v (Eq. 12, 40-42).

        Parameters
        ----------
        A : (m, m)   weights (from :meth:`gaussian_weights`); A's diagonal is ignored
        v : (m, d)

        Returns
        -------
        (m, d), computed as diag(B·1) v - B v with B = A off its diagonal (one GEMM).

        The pair j = i multiplies v_i - v_i = 0, so leaving A_ii out changes nothing
        mathematically.  Left in, A_ii v_i would enter both diag(A·1) v and A v and cancel
        only up to round-off: when K is close to the identity (every pair far apart
        relative to σ) A_ii ≫ A_ij and the result would lose all its relative accuracy.
        """
        B = A.copy()
        np.fill_diagonal(B, 0)          # B_ii = 0: the diagonal never enters a sum
        return B.sum(axis=1)[:, None] * v - self.matmul(B, v)

    def post_plain(self, neg_dz, fp, scale):
        """Post-synaptic term scale · (-dL/dz) ⊙ f'(a) (Eq. 41)."""
        return (scale * neg_dz) * fp

    def post_grouped(self, neg_dv, zhat, u, fp, p, scale):
        """Post-synaptic term of the grouped rule (Eq. 47-48):
        scale · 2(1-p)/g · (-dv_α + mean_α dv) · ẑ_αn / u_α^p · f'_n."""
        return grouping.group_pullback(scale * neg_dv, zhat, u, p, np) * fp

    def hebbian(self, post, x, out=None):
        """ΔW = postᵀ x: the Hebbian product of post- and pre-synaptic terms, one GEMM (into ``out``)."""
        return self.matmul(post.T, x, out=out)

    def im2col(self, x, kh, kw, padding):
        """Patches of x (m, C_in, H, W) as rows (m·Ho·Wo, kh·kw·C_in) (:func:`threefactor.conv.im2col`)."""
        from threefactor.rule import conv
        return conv.im2col(x, kh, kw, padding, self.xp)

    def max_pool_rows(self, z, *extra):
        """2×2 max pooling of channel-last z (m, H, W, C) with winners, and ``extra`` at them."""
        from threefactor.rule import conv
        return conv.max_pool_rows(z, self.xp, *extra)

    def route_rows(self, g, idx, shape):
        """Pooled-unit terms g back to their windows' winners in (m, H, W, C), 0 elsewhere."""
        from threefactor.rule import conv
        return conv.route_rows(g, idx, shape, self.xp)

    def layer_objective(self, K, Ky, gamma):
        """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9) of the kernel matrices, a 0-d array (no host sync)."""
        return objective.layer_objective(K, Ky, gamma)

    def label_kernel(self, labels, n_classes, kind, dtype):
        """Centred label kernel (Eq. 35 / 36) from integer labels."""
        return kernels.label_kernel(labels, n_classes, kind, dtype, np)
