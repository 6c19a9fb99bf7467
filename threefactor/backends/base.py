"""The primitive interface every backend implements (numpy is the reference).

A backend implements a few primitives, never whole rules: the engine
(:mod:`threefactor.rule.engine`), the conv rule, the networks (:mod:`threefactor.nn`)
and the online rule compose them, and reach device-specific code only through
these methods, never by asking which array module an array came from.
:class:`~threefactor.backends.numpy.NumpyBackend` is the readable reference;
the Numba and CuPy backends override the same names and are tested against it.
A new backend subclasses :class:`Backend` (or, to override a few methods only,
``NumpyBackend``) and is registered with
:func:`threefactor.backends.register_backend` or through the entry-point group
``threefactor.backends``.

Shapes used below: x (m, n_in), w (n_out, n_in), a / z / fp (m, n_out),
u / v (m, c) with c groups, K / Ky / A (m, m).  Arrays keep their dtype:
float32 in gives float32 out, float64 gives float64; integer labels are int64.
A "0-d array" result stays on the device (no host synchronisation) until
:meth:`Backend.scalars` reads it back.
"""
from __future__ import annotations

import abc


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (the message says why)."""


class Backend(abc.ABC):
    """One array library's implementation of the primitives (see the module docstring).

    Attributes
    ----------
    name : str
        The name it is registered under (``get_backend(name)``).
    xp : module
        The array namespace of its arrays (numpy, cupy, ...), used by the reference math
        that is written once against ``xp``.
    default_dtype : numpy dtype
        The dtype training uses on this backend (float64 on the host, float32 on a GPU).
    """

    name = "base"
    xp = None

    # -- arrays ---------------------------------------------------------
    @abc.abstractmethod
    def asarray(self, a, dtype=None):
        """``a`` (any array-like, host or this backend's) as an array of this backend, cast to ``dtype``."""

    @abc.abstractmethod
    def to_numpy(self, a):
        """This backend's array ``a`` as a numpy array (a copy to the host where needed)."""

    @abc.abstractmethod
    def is_native(self, a):
        """Whether ``a`` is already an array of this backend (no conversion needed)."""

    @abc.abstractmethod
    def synchronize(self):
        """Wait for queued work (a no-op on the CPU); timings call it before reading the clock."""

    @abc.abstractmethod
    def scalars(self, values):
        """0-d arrays or numbers ``values`` as one float64 numpy vector (len(values),), read back at once."""

    # -- dropout --------------------------------------------------------
    @abc.abstractmethod
    def keep_mask(self, rng, shape, p, dtype):
        """Dropout keep mask of ``shape`` and ``dtype`` (1 kept, 0 dropped with probability ``p``),
        drawn from the numpy Generator ``rng`` (:mod:`threefactor.nn.dropout`)."""

    @abc.abstractmethod
    def keep_select(self, rng, shape, p, dtype, pairs):
        """One dropout draw as len(pairs) arrays of ``shape``: for each (on, off) of ``pairs``, ``on``
        where the unit is kept and ``off`` where it is dropped (probability ``p``)."""

    # -- the dense layer's rule (Eq. 1, 9, 12, 17-22, 34-36, 40-48) ------
    @abc.abstractmethod
    def matmul(self, a, b, out=None):
        """Matrix product a @ b (a GEMM); written into ``out`` (the product's shape and dtype,
        C-contiguous) and returned when given.  ``out`` is passed only by callers that were given
        one (``local_update(..., out=)``), so an override may leave it out of its signature."""

    @abc.abstractmethod
    def forward(self, x, w, activation, slope):
        """Pre-activation a = x wᵀ, z = f(a), f'(a) (Eq. 1): three (m, n_out) arrays (a, z, fp).
        ``activation`` is one of rules.ACTIVATIONS, ``slope`` the leaky ReLU's slope."""

    def activation(self, a, activation, slope):
        """z = f(a) and f'(a) (Eq. 1) of pre-activations a computed elsewhere: (z, fp).  Not abstract:
        the default is the reference (:func:`threefactor.rule.activations.activate`) on ``xp``."""
        from threefactor.rule.activations import activate
        return activate(a, activation, slope, self.xp)

    @abc.abstractmethod
    def group_stats(self, z, groups, p, delta):
        """ẑ (m, n), u (m, c), v (m, c) of Eq. 17-18 for z (m, n) in ``groups`` = c contiguous groups."""

    @abc.abstractmethod
    def forward_grouped(self, x, w, activation, slope, groups, p, delta):
        """:meth:`forward` then :meth:`group_stats`: (a, z, fp, ẑ, u, v) (a backend may fuse them)."""

    @abc.abstractmethod
    def divisive_norm(self, zhat, u, p, mask=None):
        """r = ẑ / u^p (Eq. 21), (m, n), times the dropout ``mask`` (m, n) when given."""

    @abc.abstractmethod
    def gaussian_kernel(self, v, sigma):
        """K_ij = exp(-‖v_i - v_j‖² / 2σ²) (Eq. 26), (m, m) from v (m, d)."""

    @abc.abstractmethod
    def gaussian_weights(self, K, Ky, gamma):
        """A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b times σ²), (m, m)."""

    @abc.abstractmethod
    def laplacian(self, A, v):
        """(L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j) (Eq. 12, 40-42), (m, d); A's diagonal is ignored."""

    @abc.abstractmethod
    def post_plain(self, neg_dz, fp, scale):
        """Post-synaptic term scale · (-dL/dz) ⊙ f'(a) (Eq. 41), (m, n)."""

    @abc.abstractmethod
    def post_grouped(self, neg_dv, zhat, u, fp, p, scale):
        """Post-synaptic term of the grouped rule (Eq. 47-48), (m, n) from -dL/dv (m, c):
        scale · 2(1-p)/g · (-dv_α + mean_α dv) · ẑ_αn / u_α^p · f'_n."""

    @abc.abstractmethod
    def hebbian(self, post, x, out=None):
        """ΔW = postᵀ x (n_out, n_in): the Hebbian product of post- and pre-synaptic terms (one GEMM),
        into ``out`` when given (as :meth:`matmul`)."""

    @abc.abstractmethod
    def layer_objective(self, K, Ky, gamma):
        """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9) from the kernel matrices, a 0-d array."""

    @abc.abstractmethod
    def label_kernel(self, labels, n_classes, kind, dtype):
        """Centred label kernel (m, m) of ``dtype`` (Eq. 35 ``kind="cosine"``, Eq. 36 ``"linear"``)
        from int64 labels (m,)."""

    # -- conv layers (Sec. 4.3: threefactor.rule.conv) ---------------------
    @abc.abstractmethod
    def im2col(self, x, kh, kw, padding):
        """Patches of x (m, C_in, H, W) as rows (m·Ho·Wo, kh·kw·C_in) (:func:`threefactor.rule.conv.im2col`)."""

    @abc.abstractmethod
    def col2im(self, cols, x_shape, kh, kw, padding):
        """Adjoint of :meth:`im2col`: rows (m·Ho·Wo, kh·kw·C_in) summed back onto (m, C_in, H, W)."""

    @abc.abstractmethod
    def rows_to_nchw(self, t, m, ho, wo):
        """(m·Ho·Wo, C) in im2col row order, or (m, Ho, Wo, C), as a contiguous (m, C, Ho, Wo)."""

    @abc.abstractmethod
    def max_pool_rows(self, z, *extra):
        """2×2 max pooling of channel-last z (m, H, W, C): (pooled (m, H//2, W//2, C), winner int8
        of the same shape, [each array of ``extra`` (m, H, W, C) read at the winners])."""

    @abc.abstractmethod
    def route_rows(self, g, idx, shape):
        """Pooled-unit terms g (m, H//2, W//2, C) to their windows' winners ``idx`` in ``shape``
        (m, H, W, C), 0 elsewhere."""

    # -- networks (threefactor.nn) -----------------------------------------
    @abc.abstractmethod
    def softmax_cross_entropy(self, logits, labels):
        """(loss 0-d, dlogits (m, k), correct 0-d int) of the output layer
        (:func:`threefactor.nn.layers.softmax_cross_entropy`); logits (m, k), labels (m,) int64."""

    @abc.abstractmethod
    def sgd_step(self, w, g, buf, sign, wd, mu, lr):
        """SGD with momentum in place (:class:`threefactor.nn.optim.SGD`): d = sign·g + wd·w,
        buf = μ buf + d, w -= lr·buf.  w, g, buf of one shape and dtype; the numbers are floats."""

    def sgd_low_rank_forward(self, w, buf, post, pre, sign, wd, mu, lr, x):
        """:meth:`sgd_low_rank_step` and then a = x wᵀ with the updated w (x (m, n_in)), fused in one
        pass over w where this backend can (the Numba backend: the next step's forward pass of the
        online rule at B = 1, 2); returns a, or None when it does not fuse them (nothing done: the
        caller steps and multiplies itself).  Not abstract: the default fuses nothing."""
        return None

    def sgd_low_rank_step(self, w, buf, post, pre, sign, wd, mu, lr):
        """The :meth:`sgd_step` of w (n_out, n_in) with gradient g = postᵀ pre (post (R, n_out),
        pre (R, n_in): the online rule's two-point update) without forming g, in one pass over w
        and buf; returns True when done, False when this backend does not fuse it (the caller then
        forms g and calls :meth:`sgd_step`).  Not abstract: the default fuses nothing."""
        return False

    # -- the online rule (threefactor.rule.online) --------------------------
    @abc.abstractmethod
    def accumulate(self, w, post, pre, lr):
        """W += lr · postᵀ pre in place, without forming the (n_out, n_in) ΔW; returns w.
        w (n_out, n_in) C-contiguous, post (R, n_out), pre (R, n_in), lr a float >= 0."""

    # -- measuring (threefactor.bench) --------------------------------------
    def device_times(self, fn, n_repeat, n_warmup, max_duration):
        """Device-side times (seconds) of repeated ``fn()`` calls, or None where the host clock
        (around :meth:`synchronize`) is the right one.  The default: None."""
        return None

    def memory_growth(self, fn):
        """(bytes the device memory pool grew by during one ``fn()``, method), or None where
        host memory (tracemalloc) is what ``fn`` allocates.  The default: None."""
        return None

    def graph_call(self, fn):
        """``fn`` captured once into a device graph; a callable replaying it (CUDA graphs on CuPy).
        Backends without graphs raise NotImplementedError."""
        raise NotImplementedError(f"backend {self.name!r} has no device graphs")
