"""The Numba backend: the fast CPU path, tested against the numpy reference.

Same primitives as :class:`~threefactor.backends.numpy.NumpyBackend`; each is
BLAS GEMMs (numpy ``@``) plus one fused Numba pass over its arrays
(:mod:`._numba_kernels`), never an (m, m, n) intermediate.  float32 in gives
float32 work and results, float64 gives float64.

The cosine and linear kernels and the centred-linear label kernel use the
inherited numpy code: their cost is the GEMMs numpy already hands to BLAS.

Threads (the pools themselves are arranged by :mod:`threefactor.threads`): the kernels are compiled with ``parallel=True`` (``prange`` over
samples), but a pass over fewer than :attr:`NumbaBackend.parallel_min_size`
elements runs on the calling thread only.  At the sizes of a mini-batch the
passes take tens of microseconds, less than waking a second thread costs, and
on a machine whose cores are shared (or busy with OpenBLAS's own threads)
waiting for a worker thread can cost milliseconds.

BLAS threads likewise: a GEMM of fewer than :attr:`NumbaBackend.small_gemm_macs`
multiply-adds (the kernel GEMMs v vᵀ and A v of the grouped rule, the output
layer's products) runs on one OpenBLAS thread.  Measured with the other core
busy: v vᵀ at m = 256, c = 32 takes 0.24 ms on two threads and 0.07 ms on one;
on a quiet machine one thread is as fast at these sizes.

Shapes: x (m, n_in), w (n_out, n_in), z / a / fp (m, n_out), u / v (m, c),
K / A / Ky (m, m).
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np

from threefactor.backends import _numba_kernels as _k
from threefactor.rule.activations import SELU_ALPHA, SELU_SCALE
from threefactor.threads import blas_threads_at_most
from threefactor.rule.grouping import group_size
from threefactor.rule.rules import ACTIVATIONS, choice_error
from threefactor.backends.numpy import NumpyBackend

_ACTIVATION_CODE = {"linear": _k.LINEAR, "relu": _k.RELU, "lrelu": _k.LRELU, "selu": _k.SELU}


def _float_array(a):
    """``a`` as a C-contiguous float32 or float64 array (other numbers become float64)."""
    a = np.asarray(a)
    if a.dtype != np.float32 and a.dtype != np.float64:
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _like(dtype, *arrays):
    """The arrays as C-contiguous arrays of ``dtype`` (no copy when they already are)."""
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


@contextlib.contextmanager
def one_numba_thread():
    """Within the block, Numba's parallel kernels run on the calling thread only."""
    threads = numba.get_num_threads()
    if threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


class NumbaBackend(NumpyBackend):
    """Fused Numba kernels around BLAS GEMMs; numpy arrays in and out."""

    name = "numba"
    xp = np

    #: Passes over fewer elements than this run on one thread (see the module docstring).
    parallel_min_size = 1 << 22
    #: GEMMs of fewer multiply-adds than this run on one BLAS thread (see the module docstring).
    small_gemm_macs = 1 << 22

    def _one_blas_thread(self, macs):
        """Within the block, OpenBLAS uses one thread if ``macs`` < :attr:`small_gemm_macs`."""
        return blas_threads_at_most(1 if macs < self.small_gemm_macs else 1 << 30)

    #: float32 products x wᵀ of at most this many rows are taken as (w xᵀ)ᵀ (see :meth:`matmul`).
    few_rows = 64

    def matmul(self, a, b, out=None):
        """Matrix product (BLAS GEMM), into ``out`` when given; a small one on one BLAS thread.

        A float32 x wᵀ of 2 to :attr:`few_rows` rows (b = wᵀ a transposed C array: the online rule's
        forward pass of a few streams, the refreshed previous samples) is computed as (w xᵀ)ᵀ: OpenBLAS
        0.3.31 takes 1.3-5x as long for the first form at 2-64 rows (benchmarks/RESULTS.md, "Two pairs
        per sample"); the two differ by float32 rounding only."""
        with self._one_blas_thread(a.shape[-2] * a.shape[-1] * b.shape[-1]):
            if (out is None and a.ndim == 2 and b.ndim == 2 and 1 < a.shape[0] <= self.few_rows
                    and a.dtype == np.float32 and b.dtype == np.float32 and b.T.flags.c_contiguous
                    and not b.flags.c_contiguous):
                return np.ascontiguousarray((b.T @ a.T).T)
            return a @ b if out is None else np.matmul(a, b, out=out)

    def _run(self, kernel, size, *args):
        """Call ``kernel(*args)``, on one thread when its pass covers < parallel_min_size elements."""
        if size >= self.parallel_min_size:
            return kernel(*args)
        with one_numba_thread():
            return kernel(*args)

    # -- primitives -----------------------------------------------------
    def _pre_activation(self, x, w, activation):
        """(a = x wᵀ, activation code, e = exp(min(a, 0)) for SELU, else a) for the fused passes."""
        code = _ACTIVATION_CODE.get(activation)
        if code is None:
            raise choice_error("activation", activation, ACTIVATIONS)
        return self._activation_inputs(_float_array(self.matmul(x, w.T)), code)

    @staticmethod
    def _activation_inputs(a, code):
        e = a                                       # exp(min(a, 0)) is read by SELU only
        if code == _k.SELU:
            e = np.minimum(a, 0)
            np.exp(e, out=e)
        return a, code, e

    @staticmethod
    def _activation_scalars(t, slope):
        return t(slope), t(SELU_SCALE), t(SELU_SCALE * SELU_ALPHA)

    def forward(self, x, w, activation, slope):
        """a = x wᵀ (one GEMM), then z = f(a) and f'(a) in one fused pass.  Returns (a, z, fp)."""
        a, code, e = self._pre_activation(x, w, activation)
        z, fp = np.empty_like(a), np.empty_like(a)
        self._run(_k.activate, a.size, a, code, *self._activation_scalars(a.dtype.type, slope), e, z, fp)
        return a, z, fp

    def activation(self, a, activation, slope):
        """z = f(a) and f'(a) of given pre-activations, the fused pass of :meth:`forward`."""
        code = _ACTIVATION_CODE.get(activation)
        if code is None:
            raise choice_error("activation", activation, ACTIVATIONS)
        a, code, e = self._activation_inputs(_float_array(a), code)
        z, fp = np.empty_like(a), np.empty_like(a)
        self._run(_k.activate, a.size, a, code, *self._activation_scalars(a.dtype.type, slope), e, z, fp)
        return z, fp

    @staticmethod
    def _group_outputs(z, groups):
        """Checked group count; empty ẑ (m, n) and u (m, c) for :func:`_k.group_moments`."""
        group_size(z.shape[1], groups)
        return np.empty_like(z), np.empty((z.shape[0], groups), dtype=z.dtype)

    @staticmethod
    def _centred_power(u, p):
        """v = u^(1-p) - mean_α u^(1-p) (Eq. 18), numpy's vectorised pow."""
        s = u ** u.dtype.type(1 - p)
        return s - s.mean(axis=1, keepdims=True)

    def group_stats(self, z, groups, p, delta):
        """ẑ (m, n), u (m, c), v (m, c) of Eq. 17-18: ẑ and u in one pass per sample."""
        z = _float_array(z)
        zhat, u = self._group_outputs(z, groups)
        t = z.dtype.type
        self._run(_k.group_moments, z.size, z, 0, t(0), t(0), t(0), z, True, t(delta),
                  t(z.shape[1] // groups), z, z, zhat, u)
        return zhat, u, self._centred_power(u, p)

    def forward_grouped(self, x, w, activation, slope, groups, p, delta):
        """:meth:`forward` and :meth:`group_stats` in one pass over the rows (each row's z
        is centred while still in cache).  Returns (a, z, fp, ẑ, u, v)."""
        a, code, e = self._pre_activation(x, w, activation)
        z, fp = np.empty_like(a), np.empty_like(a)
        zhat, u = self._group_outputs(a, groups)
        t = a.dtype.type
        self._run(_k.group_moments, a.size, a, code, *self._activation_scalars(t, slope), e, False,
                  t(delta), t(a.shape[1] // groups), z, fp, zhat, u)
        return a, z, fp, zhat, u, self._centred_power(u, p)

    def divisive_norm(self, zhat, u, p, mask=None):
        """r = ẑ / u^p (Eq. 21), times the dropout ``mask`` if given: one fused pass."""
        zhat = _float_array(zhat)
        (u,) = _like(zhat.dtype, u)
        r = np.empty_like(zhat)
        masked = mask is not None
        (mask,) = _like(zhat.dtype, mask.reshape(zhat.shape)) if masked else (zhat,)
        self._run(_k.divide_groups, zhat.size, zhat, u ** zhat.dtype.type(p), mask, masked, r)
        return r

    @staticmethod
    def gram_by_gemm(m, d):
        """Whether the Gram matrix v vᵀ of v (m, d) is a GEMM with a copy of vᵀ rather than SYRK.

        numpy hands ``v @ v.T`` to SYRK, which in OpenBLAS is slow for a short inner
        dimension: at m = 1024, d = 32 (grouped rules) 3.2 ms against 0.64 ms for the
        GEMM; at m = 256, d = 32, 73 against 50 us.  For long rows (d > 128 and 4d > m)
        the transposed copy costs more than SYRK saves, e.g. m = 256, d = 256:
        0.49 against 0.25 ms (2-core Zen 4, OpenBLAS 0.3.31).
        """
        return d <= 128 or 4 * d <= m

    def gaussian_kernel(self, v, sigma):
        """K_ij = exp(-‖v_i - v_j‖² / 2σ²) (Eq. 26): the Gram matrix v vᵀ (:meth:`gram_by_gemm`),
        one fused pass, one exp."""
        v = _float_array(v)
        m, d = v.shape
        with self._one_blas_thread(m * m * d):
            G = v @ (np.ascontiguousarray(v.T) if self.gram_by_gemm(m, d) else v.T)
        K = np.empty_like(G)
        self._run(_k.gaussian_exponent, G.size, G, np.diagonal(G).copy(), v.dtype.type(-0.5 / sigma ** 2), K)
        return np.exp(K, out=K)

    def im2col(self, x, kh, kw, padding):
        """Patches as rows, one Numba pass after a channel-last copy (same bits as the reference).

        Single-channel inputs keep numpy's strided copies, which are faster there."""
        if x.dtype.kind != "f" or x.shape[1] < 2:
            return super().im2col(x, kh, kw, padding)
        from threefactor.backends import _im2col_numba
        return _im2col_numba.im2col(x, kh, kw, padding)

    def max_pool_rows(self, z, *extra):
        """2×2 max pooling with winners (one Numba pass each; same bits as the numpy reference)."""
        if z.dtype.kind != "f" or any(t.dtype.kind != "f" for t in extra):
            return super().max_pool_rows(z, *extra)
        from threefactor.backends import _pool_numba
        return _pool_numba.max_pool_rows(z, *extra)

    def route_rows(self, g, idx, shape):
        """Pooled-unit terms back to the winners, one Numba pass."""
        if g.dtype.kind != "f":
            return super().route_rows(g, idx, shape)
        from threefactor.backends import _pool_numba
        return _pool_numba.route_rows(g, idx, shape)

    def label_kernel(self, labels, n_classes, kind, dtype):
        """Centred label kernel (Eq. 35 / 36) from integer labels; Eq. 35 in one pass."""
        if kind != "cosine":
            return super().label_kernel(labels, n_classes, kind, dtype)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        dtype = np.dtype(dtype)
        m = labels.shape[0]
        Ky = np.empty((m, m), dtype=dtype)
        self._run(_k.label_kernel_cosine, Ky.size, labels, dtype.type(-1.0 / (n_classes - 1)), Ky)
        return Ky

    def gaussian_weights(self, K, Ky, gamma):
        """A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b times σ²): the two means, then one fused pass."""
        K = _float_array(K)
        (Ky,) = _like(K.dtype, Ky)
        m2 = K.shape[0] * K.shape[1]
        kbar, kybar = K.mean(), Ky.mean()            # numpy's SIMD pairwise sums, as the reference
        t = K.dtype.type
        A = np.empty_like(K)
        self._run(_k.gaussian_weights, m2, K, Ky, t(kbar), t(kybar), t(gamma), t(m2), A)
        return A

    def layer_objective(self, K, Ky, gamma):
        """L = mean(K ⊙ (K - γ Ky)) - K̄ (K̄ - γ K̄y) (Eq. 9, :func:`threefactor.rule.objective.layer_objective`)
        from one pass over K and Ky with float64 sums, as a 0-d array of K's dtype."""
        K = _float_array(K)
        K, Ky = _like(K.dtype, K, Ky)
        sk, sy, sd = _k.objective_sums(K, Ky, float(gamma))
        n = K.size
        kbar = sk / n
        return np.asarray(sd / n - kbar * (kbar - gamma * (sy / n)), dtype=K.dtype)

    def laplacian(self, A, v):
        """(L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j) (Eq. 12, 40-42) with one GEMM (m, m) × (m, d).

        A's diagonal is ignored, as in the reference (:meth:`NumpyBackend.laplacian`): it
        multiplies v_i - v_i = 0 and would only add cancellation error, so it never enters
        a sum.  For d > m (the plain rule) the GEMM multiplies L_A = diag(B·1) - B itself
        (B = A off its diagonal), built in one (m, m) pass (:func:`_k.laplacian_matrix`);
        otherwise one (m, m) pass writes B and B·1 (:func:`_k.off_diagonal`), BLAS forms B v
        and a pass over the (m, d) result subtracts it from diag(B·1) v.
        """
        v = _float_array(v)
        (A,) = _like(v.dtype, A)
        m, d = v.shape
        if d > A.shape[1]:
            L = np.empty_like(A)
            self._run(_k.laplacian_matrix, L.size, A, L)
            return np.ascontiguousarray(self.matmul(L, v))
        B = np.empty_like(A)
        rs = np.empty(A.shape[0], dtype=v.dtype)
        self._run(_k.off_diagonal, B.size, A, B, rs)
        bv = np.ascontiguousarray(self.matmul(B, v))
        self._run(_k.laplacian_finish, bv.size, rs, v, bv)
        return bv

    def post_plain(self, neg_dz, fp, scale):
        """Post-synaptic term scale · (-dL/dz) ⊙ f'(a) (Eq. 41), one pass."""
        neg_dz = _float_array(neg_dz)
        (fp,) = _like(neg_dz.dtype, fp)
        post = np.empty_like(neg_dz)
        self._run(_k.post_plain, post.size, neg_dz, fp, neg_dz.dtype.type(scale), post)
        return post

    def post_grouped(self, neg_dv, zhat, u, fp, p, scale):
        """Post-synaptic term of the grouped rule (Eq. 47-48), one fused pass:
        scale · 2(1-p)/g · (-dv_α + mean_α dv) · ẑ_αn / u_α^p · f'_n."""
        zhat = _float_array(zhat)
        neg_dv, u, fp = _like(zhat.dtype, neg_dv, u, fp)
        m, n = zhat.shape
        c = u.shape[1]
        t = zhat.dtype.type
        coef = np.empty((m, c), dtype=zhat.dtype)
        post = np.empty_like(zhat)
        self._run(_k.post_grouped, post.size, neg_dv, zhat, u ** t(p), fp, t(scale),
                  t(2.0 * (1 - p) / (n // c)), t(c), coef, post)
        return post

    def sgd_step(self, w, g, buf, sign, wd, mu, lr):
        """SGD with momentum in place, one Numba pass (same bits as :meth:`NumpyBackend.sgd_step`)
        when w, g, buf are C-contiguous arrays of one float dtype and sign is ±1; else the reference."""
        if not (sign in (1.0, -1.0) and _flat_floats(w, g, buf)):
            return super().sgd_step(w, g, buf, sign, wd, mu, lr)
        t = w.dtype.type
        _k.sgd_step(w.reshape(-1), g.reshape(-1), buf.reshape(-1), t(sign), t(wd), t(mu), t(lr))

    def sgd_low_rank_step(self, w, buf, post, pre, sign, wd, mu, lr):
        """The SGD step with g = postᵀ pre in one Numba pass over w and buf
        (:func:`threefactor.backends._online_kernels.sgd_low_rank`; a serial loop for small ones);
        False for more than ``LOW_RANK_UP_TO`` terms or arrays it cannot take (ΔW is formed then)."""
        from threefactor.backends import _online_kernels as kern
        operands = _low_rank_operands(w, buf, post, pre)
        if operands is None:
            return False
        ut, pre = operands
        R, t = ut.shape[1], w.dtype.type
        step = kern.sgd_low_rank_serial if w.size * max(R, 1) < kern.SERIAL_BELOW else kern.sgd_low_rank
        step(w, buf, ut, pre, t(sign), t(wd), t(mu), t(lr))
        return True

    def sgd_low_rank_forward(self, w, buf, post, pre, sign, wd, mu, lr, x):
        """:meth:`sgd_low_rank_step` and a = x wᵀ with the updated w in one pass over w and buf
        (:func:`threefactor.backends._online_kernels.sgd_low_rank_forward`): each row is stepped and
        multiplied with the rows of x while in cache.  None (nothing done) where
        :meth:`sgd_low_rank_step` would not fuse the step, or x is not an (m, n_in) array of w's dtype
        with at most ``few_rows`` rows."""
        from threefactor.backends import _online_kernels as kern
        if (type(x) is not np.ndarray or x.dtype != w.dtype or x.ndim != 2 or w.ndim != 2
                or x.shape[1] != w.shape[1] or not 0 < x.shape[0] <= self.few_rows):
            return None
        operands = _low_rank_operands(w, buf, post, pre)
        if operands is None:
            return None
        ut, pre = operands
        R, t = ut.shape[1], w.dtype.type
        x = np.ascontiguousarray(x)
        a = np.empty((x.shape[0], w.shape[0]), w.dtype)
        step = (kern.sgd_low_rank_forward_serial if w.size * (max(R, 1) + x.shape[0]) < kern.SERIAL_BELOW
                else kern.sgd_low_rank_forward)
        step(w, buf, ut, pre, t(sign), t(wd), t(mu), t(lr), x, a)
        return a


def _low_rank_operands(w, buf, post, pre):
    """(ut (n_out, R), pre (R, n_in)), C-contiguous in w's dtype, for the Numba low-rank SGD kernels
    (:mod:`threefactor.backends._online_kernels`); None for more than ``LOW_RANK_UP_TO`` terms or arrays
    they cannot take."""
    from threefactor.backends import _online_kernels as kern
    if (post.shape[0] > kern.LOW_RANK_UP_TO or w.ndim != 2 or not _flat_floats(w, buf)
            or post.shape[1:] != w.shape[:1] or pre.shape[1:] != w.shape[1:]):
        return None
    return (np.ascontiguousarray(np.asarray(post).T, dtype=w.dtype),
            np.ascontiguousarray(pre, dtype=w.dtype))


def _flat_floats(*arrays):
    """Whether every array is a C-contiguous numpy array of the first one's float32/float64 dtype."""
    first = arrays[0]
    return (all(type(a) is np.ndarray and a.flags.c_contiguous and a.dtype == first.dtype for a in arrays)
            and first.dtype in (np.float32, np.float64))


def set_threads(n):
    """Use ``n`` Numba threads (at most ``NUMBA_NUM_THREADS``); returns the count now in use."""
    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    return numba.get_num_threads()
