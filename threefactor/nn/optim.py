"""Optimisers and the learning-rate schedule, written out (no torch.optim).

Every hidden layer has its own optimiser, so a layer can step during the
forward pass (App. D.1); the output layer (or, for backprop, every layer)
has another.  Parameters are updated in place, on whatever array library
they live in (numpy or cupy): only in-place arithmetic is used.

SGD with momentum follows PyTorch's convention (paper App. D.4: μ = 0.95)::

    g   = grad + wd · w               (weight decay added to the gradient)
    buf = μ · buf + g                 (buf starts at 0, so the first buf is g)
    w  -= lr · buf

AdamW (Loshchilov & Hutter 2019; paper App. D.4: β1 = 0.9, β2 = 0.999,
ε = 1e-8) decays the weights decoupled from the gradient::

    w  -= lr · wd · w
    m   = β1 m + (1 - β1) g,   v = β2 v + (1 - β2) g²
    w  -= lr · (m / (1 - β1^t)) / (sqrt(v / (1 - β2^t)) + ε)

For a local rule the engine returns ΔW = -dL/dW, a *descent* direction, so
its layer's optimiser is stepped with ``sign=-1`` (g = -ΔW).
"""
from __future__ import annotations

import math

import numpy as np

from threefactor.rule.rules import choice_error

OPTIMIZERS = ("sgd", "adamw")


def _xp(a):
    """The array module of ``a`` (numpy or cupy) without importing cupy."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":  # pragma: no cover - needs a GPU
        import cupy
        return cupy
    return np


def _check_nonneg(name, value, positive=False):
    """``value`` as a finite float >= 0 (> 0 with ``positive``), else a ValueError naming ``name``."""
    value = float(value)
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
    return value


def _check_lr(lr):
    lr = float(lr)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr}")
    return lr


_FUSED = {}


def _fused_sgd_kernel():
    """A one-pass Numba kernel for the SGD step on C-contiguous numpy arrays, or None.

    It performs the same float operations in the same order as the numpy
    path (no FMA contraction without fastmath), so both give the same bits;
    it only saves the temporaries and memory passes.
    """
    if "sgd" not in _FUSED:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency
            _FUSED["sgd"] = None
            return None

        @numba.njit(cache=True, nogil=True)
        def sgd_step(w, g, buf, sign, wd, mu, lr):   # all flat, same dtype; scalars of that dtype
            for i in range(w.shape[0]):
                wi = w[i]
                d = sign * g[i] + wd * wi
                b = buf[i] * mu + d
                buf[i] = b
                w[i] = wi - lr * b

        _FUSED["sgd"] = sgd_step
    return _FUSED["sgd"]


def _is_low_rank(g):
    """Whether ``g`` is a low-rank update ΔW = postᵀ pre (a :class:`threefactor.rule.online.TwoPointUpdate`)."""
    return hasattr(g, "post") and hasattr(g, "pre") and hasattr(g, "dense")


def _low_rank_step(w, g, buf, sign, wd, mu, lr, fused):
    """The SGD step with g = ΔW = postᵀ pre in one pass over w and buf: Numba on the host
    (:func:`threefactor.backends._online_kernels.sgd_low_rank`), one CUDA kernel on the GPU
    (:func:`threefactor.backends._online_cupy.sgd_low_rank`); False where it does not apply (many
    terms, no Numba, ``fused=False``): the caller forms ΔW."""
    lib = _fusable(w, buf)
    if fused is False or lib is None or w.ndim != 2 or g.post.shape[1:] != w.shape[:1] \
            or g.pre.shape[1:] != w.shape[1:]:
        return False
    if lib == "cupy":
        from threefactor.backends import _online_cupy
        return _online_cupy.sgd_low_rank(w, buf, g.post, g.pre, sign, wd, mu, lr)
    try:
        from threefactor.backends import _online_kernels as kern
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    R = g.post.shape[0]
    if R > kern.LOW_RANK_UP_TO:
        return False
    t = w.dtype.type
    ut = np.ascontiguousarray(g.post.T, dtype=w.dtype)
    pre = np.ascontiguousarray(g.pre, dtype=w.dtype)
    step = kern.sgd_low_rank_serial if w.size * max(R, 1) < kern.SERIAL_BELOW else kern.sgd_low_rank
    step(w, buf, ut, pre, t(sign), t(wd), t(mu), t(lr))
    return True


def _fusable(*arrays):
    """The array library ("numpy" or "cupy") when every array is a C-contiguous array of that one
    library and one float dtype, so that a fused one-pass step applies; else None."""
    first = arrays[0]
    if not (all(type(a) is type(first) for a in arrays) and hasattr(first, "flags")
            and all(a.flags.c_contiguous and a.dtype == first.dtype for a in arrays)
            and first.dtype in (np.float32, np.float64)):
        return None
    if type(first) is np.ndarray:
        return "numpy"
    return "cupy" if type(first).__module__.split(".")[0] == "cupy" else None


class SGD:
    """SGD with (heavy-ball) momentum and L2 weight decay, PyTorch's convention.

    Parameters
    ----------
    params : list of arrays
        Parameters updated in place (e.g. ``[w]`` of shape (n_out, n_in), or
        ``[w, b]``).  Their dtype is kept (float32 stays float32).
    lr : float
        Learning rate η (changed by the schedule through ``self.lr``).
    momentum : float
        μ in [0, 1).
    weight_decay : float
        L2 coefficient added to the gradient.
    """

    name = "sgd"

    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0, fused=None):
        self.params = list(params)
        self.fused = fused
        self.lr = _check_lr(lr)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.buffers = [_xp(p).zeros_like(p) for p in self.params]
        self.steps = 0

    def step(self, grads, sign=1.0):
        """Update every parameter in place from ``grads`` (same shapes).

        ``sign=-1`` treats ``grads`` as a descent direction ΔW (g = -ΔW).
        """
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        mu, wd, lr = self.momentum, self.weight_decay, self.lr
        for w, g, buf in zip(self.params, grads, self.buffers):
            if _is_low_rank(g):        # an online two-point update: one pass over W, ΔW never formed
                if _low_rank_step(w, g, buf, sign, wd, mu, lr, self.fused):
                    continue
                g = g.dense()
            if g.shape != w.shape:
                raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {w.shape}")
            fusable = _fusable(w, g, buf) if self.fused is not False else None
            if fusable == "cupy":
                from threefactor.backends.cupy import sgd_step
                sgd_step(w, g, buf, sign, wd, mu, lr)
                continue
            if fusable == "numpy" and sign in (1.0, -1.0):
                kernel = _fused_sgd_kernel()
                if kernel is not None:
                    t = w.dtype.type
                    kernel(w.reshape(-1), g.reshape(-1), buf.reshape(-1), t(sign), t(wd), t(mu), t(lr))
                    continue
            # d = sign·g + wd·w, then buf = μ buf + d (PyTorch's order of operations)
            if sign == 1.0:
                d = g + wd * w if wd else g
            elif sign == -1.0:
                d = wd * w - g if wd else -g
            else:
                d = sign * g + wd * w
            buf *= mu
            buf += d
            w -= lr * buf
        self.steps += 1

    def state(self):
        """Arrays and numbers to checkpoint: {"buffers": [...], "steps": int, "lr": float}."""
        return {"buffers": list(self.buffers), "steps": self.steps, "lr": self.lr}

    def load_state(self, state):
        """Restore :meth:`state` (buffers are copied into the existing arrays)."""
        _copy_into(self.buffers, state["buffers"], "momentum buffer")
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


class AdamW:
    """AdamW with decoupled weight decay (PyTorch's defaults for β, ε).

    Parameters
    ----------
    params : list of arrays
        Parameters updated in place.
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
    """

    name = "adamw"

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = list(params)
        self.lr = _check_lr(lr)
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas, self.eps = (b1, b2), _check_nonneg("eps", eps, positive=True)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.m = [_xp(p).zeros_like(p) for p in self.params]
        self.v = [_xp(p).zeros_like(p) for p in self.params]
        self.steps = 0

    def step(self, grads, sign=1.0):
        """Update every parameter in place; ``sign=-1`` for a descent direction ΔW."""
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        self.steps += 1
        (b1, b2), lr, t = self.betas, self.lr, self.steps
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        for w, g, m, v in zip(self.params, grads, self.m, self.v):
            xp = _xp(w)
            if _is_low_rank(g):
                g = g.dense()
            if sign != 1.0:
                g = sign * g
            if self.weight_decay:
                w *= 1.0 - lr * self.weight_decay
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            denom = xp.sqrt(v / c2)
            denom += self.eps
            w -= (lr / c1) * m / denom

    def state(self):
        return {"buffers": list(self.m) + list(self.v), "steps": self.steps, "lr": self.lr}

    def load_state(self, state):
        n = len(self.params)
        bufs = list(state["buffers"])
        if len(bufs) != 2 * n:
            raise ValueError(f"AdamW state has {len(bufs)} buffers, expected {2 * n}")
        _copy_into(self.m, bufs[:n], "AdamW first moment")
        _copy_into(self.v, bufs[n:], "AdamW second moment")
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


def _copy_into(targets, sources, what):
    if len(targets) != len(sources):
        raise ValueError(f"{what}: checkpoint has {len(sources)} arrays, expected {len(targets)}")
    for dst, src in zip(targets, sources):
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"{what}: checkpoint shape {tuple(src.shape)} != {tuple(dst.shape)}")
        dst[...] = _xp(dst).asarray(src, dtype=dst.dtype)


def make_optimizer(name, params, lr, weight_decay, momentum=0.95):
    """An optimiser by name: ``"sgd"`` (paper's choice) or ``"adamw"``."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay)
    raise choice_error("optimizer", name, OPTIMIZERS)


def multistep_lr(base_lr, epoch, milestones=(50, 75, 90), factor=0.25):
    """Learning rate of 1-based ``epoch`` under a step schedule (App. D.5).

    The rate is ``base_lr · factor^k`` with k the number of milestones
    strictly before ``epoch``: with milestones (50, 75, 90) epochs 1-50 use
    ``base_lr``, 51-75 ``base_lr/4``, 76-90 ``base_lr/16`` and 91-100
    ``base_lr/64`` (PyTorch's MultiStepLR stepped once per epoch).
    """
    k = sum(1 for m in milestones if m < epoch)
    return base_lr * factor ** k
