"""Optimisers and the learning-rate schedule, written out (no torch.optim).

Every hidden layer has its own optimiser, so a layer can step during the
forward pass (App. D.1); the output layer (or, for backprop, every layer)
has another.  Parameters are updated in place on their backend: the SGD step is
the backend primitive :meth:`~threefactor.backends.base.Backend.sgd_step`, AdamW
in-place arithmetic on the backend's arrays.

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

from threefactor.backends import backend_of, get_backend
from threefactor.rule.rules import choice_error
from threefactor.validate import check_lr

OPTIMIZERS = ("sgd", "adamw")


def _backend(params, backend):
    """The backend of the parameters: ``backend`` (a name or object) if given, else the registered
    backend their first array belongs to (numpy arrays: numpy, the reference step)."""
    if backend is not None:
        return get_backend(backend)
    found = backend_of(params[0]) if params else None
    return found if found is not None else get_backend("numpy")


def _check_nonneg(name, value, positive=False):
    """``value`` as a finite float >= 0 (> 0 with ``positive``), else a ValueError naming ``name``."""
    value = float(value)
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}")
    return value


def _is_low_rank(g):
    """Whether ``g`` is a low-rank update ΔW = postᵀ pre (a :class:`threefactor.rule.online.TwoPointUpdate`)."""
    return hasattr(g, "post") and hasattr(g, "pre") and hasattr(g, "dense")


class PendingStep:
    """One SGD step of a low-rank update (the online rule's ΔW = postᵀ pre) kept until its parameter
    is next read: :meth:`apply` does it, fused with that read where the backend can.

    :meth:`SGD.step` keeps one with ``defer=True`` (:meth:`threefactor.nn.network.Network.deferred_steps`);
    the online layer applies it at its next forward pass, so that at B = 1 each W is read and written
    once per sample (the step and the next a = x wᵀ in one pass) instead of twice.  The step itself is
    the one :meth:`SGD.step` would have taken then (its rate, momentum and weight decay)."""

    __slots__ = ("backend", "w", "buf", "g", "sign", "wd", "mu", "lr", "done")

    def __init__(self, backend, w, buf, g, sign, wd, mu, lr):
        self.backend, self.w, self.buf, self.g = backend, w, buf, g
        self.sign, self.wd, self.mu, self.lr = sign, wd, mu, lr
        self.done = False

    def apply(self, x=None):
        """Take the step (once; a second call is a RuntimeError).  With x (m, n_in): also return
        a = x wᵀ with the stepped w when the backend fuses the two
        (:meth:`~threefactor.backends.base.Backend.sgd_low_rank_forward`), else None (the caller
        computes a itself)."""
        if self.done:
            raise RuntimeError("this deferred SGD step was already applied")
        self.done = True
        be, w, buf, g = self.backend, self.w, self.buf, self.g
        args = (self.sign, self.wd, self.mu, self.lr)
        if x is not None:
            a = be.sgd_low_rank_forward(w, buf, g.post, g.pre, *args, x)
            if a is not None:
                return a
        _sgd_step_of(be, w, g, buf, *args)
        return None


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
    fused : bool, optional
        False: the reference step (:meth:`NumpyBackend.sgd_step`, in-place arithmetic) whatever the
        backend; otherwise the backend's :meth:`~threefactor.backends.base.Backend.sgd_step`
        (one fused pass on Numba and CuPy, the same bits).
    backend : str or Backend, optional
        The parameters' backend (default: the registered backend their arrays belong to).
    """

    name = "sgd"

    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0, fused=None, backend=None):
        self.params = list(params)
        self.fused = fused
        self.backend = _backend(self.params, backend)
        self.lr = check_lr(lr)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.buffers = [self.backend.xp.zeros_like(p) for p in self.params]
        self.steps = 0
        self.pending = None

    def step(self, grads, sign=1.0, defer=False):
        """Update every parameter in place from ``grads`` (same shapes).

        ``sign=-1`` treats ``grads`` as a descent direction ΔW (g = -ΔW).  ``defer=True``, for one
        parameter and a low-rank update (the online rule's), keeps the step as :attr:`pending` (a
        :class:`PendingStep`) instead of taking it: its layer applies it at its next forward pass
        (:meth:`take_pending`), and :meth:`flush` or the next :meth:`step` or :meth:`state` takes it.
        Otherwise ``defer`` is ignored.
        """
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        self.flush()
        mu, wd, lr = self.momentum, self.weight_decay, self.lr
        if defer and self.fused is not False and len(self.params) == 1 and _is_low_rank(grads[0]):
            self.pending = PendingStep(self.backend, self.params[0], self.buffers[0], grads[0], sign, wd, mu, lr)
            self.steps += 1
            return
        for w, g, buf in zip(self.params, grads, self.buffers):
            _sgd_step_of(self.backend, w, g, buf, sign, wd, mu, lr, fused=self.fused is not False)
        self.steps += 1

    def take_pending(self):
        """The deferred step (:class:`PendingStep`, or None), handed over: the caller applies it."""
        pending, self.pending = self.pending, None
        return pending

    def flush(self):
        """Take the deferred step, if any (the parameters are then up to date)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.apply()

    def state(self):
        """Arrays and numbers to checkpoint: {"buffers": [...], "steps": int, "lr": float}
        (a deferred step is taken first)."""
        self.flush()
        return {"buffers": list(self.buffers), "steps": self.steps, "lr": self.lr}

    def load_state(self, state):
        """Restore :meth:`state` (buffers are copied into the existing arrays; a deferred step of the
        replaced trajectory is dropped)."""
        self.pending = None
        _copy_into(self.buffers, state["buffers"], "momentum buffer", self.backend)
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

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, backend=None):
        self.params = list(params)
        self.backend = _backend(self.params, backend)
        self.lr = check_lr(lr)
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas, self.eps = (b1, b2), _check_nonneg("eps", eps, positive=True)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.m = [self.backend.xp.zeros_like(p) for p in self.params]
        self.v = [self.backend.xp.zeros_like(p) for p in self.params]
        self.steps = 0

    def step(self, grads, sign=1.0):
        """Update every parameter in place; ``sign=-1`` for a descent direction ΔW."""
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        self.steps += 1
        (b1, b2), lr, t = self.betas, self.lr, self.steps
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        for w, g, m, v in zip(self.params, grads, self.m, self.v):
            xp = self.backend.xp
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
        _copy_into(self.m, bufs[:n], "AdamW first moment", self.backend)
        _copy_into(self.v, bufs[n:], "AdamW second moment", self.backend)
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


def _sgd_step_of(backend, w, g, buf, sign, wd, mu, lr, fused=True):
    """One parameter's SGD step in place.  A low-rank g (an online two-point update) in one pass over W,
    ΔW never formed, where the backend fuses it (``fused``); else ΔW formed and the backend's fused
    step (``fused``) or the reference."""
    if _is_low_rank(g):
        if fused and backend.sgd_low_rank_step(w, buf, g.post, g.pre, sign, wd, mu, lr):
            return
        g = g.dense()
    if g.shape != w.shape:
        raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {w.shape}")
    (backend.sgd_step if fused else _reference_sgd_step)(w, g, buf, sign, wd, mu, lr)


def _reference_sgd_step(w, g, buf, sign, wd, mu, lr):
    """The reference SGD step (:meth:`NumpyBackend.sgd_step`, in-place arithmetic on any arrays)."""
    from threefactor.backends.numpy import NumpyBackend
    NumpyBackend.sgd_step(w, g, buf, sign, wd, mu, lr)


def _copy_into(targets, sources, what, backend):
    if len(targets) != len(sources):
        raise ValueError(f"{what}: checkpoint has {len(sources)} arrays, expected {len(targets)}")
    for dst, src in zip(targets, sources):
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"{what}: checkpoint shape {tuple(src.shape)} != {tuple(dst.shape)}")
        dst[...] = backend.asarray(src, dtype=dst.dtype)


def make_optimizer(name, params, lr, weight_decay, momentum=0.95, backend=None):
    """An optimiser by name: ``"sgd"`` (paper's choice) or ``"adamw"``, on the parameters' ``backend``."""
    if name == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay, backend=backend)
    if name == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay, backend=backend)
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
