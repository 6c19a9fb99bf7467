"""The layers of the paper's networks (App. D.1), forward passes only.

A hidden layer is::

    a = x Wᵀ  (no bias)  ->  z = f(a)  ->  local objective (reads z, does not change it)
      ->  r = ẑ / u^p  (divisive normalisation, Eq. 21, if grp+div)  ->  dropout

and the output layer is ``logits = x Wᵀ + b`` trained with softmax
cross-entropy, whose gradient is written out in :func:`softmax_cross_entropy`.
The local rule's update comes from :func:`threefactor.rule.engine.local_step`;
backprop's backward pass lives in :mod:`threefactor.nn.backprop`.

Shapes: x (m, n_in), W (n_out, n_in), b (n_out,), labels (m,) integers.
Arrays belong to a backend (numpy or cupy); ``backend.xp`` is their module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from threefactor.rule import batchnorm
from threefactor.rule import engine
from threefactor.rule.rules import Rule


def uniform_init(rng, n_out, n_in, dtype=np.float32):
    """W ~ U(-1/√n_in, 1/√n_in), shape (n_out, n_in), drawn from the numpy Generator ``rng``."""
    bound = 1.0 / np.sqrt(n_in)
    return rng.uniform(-bound, bound, size=(n_out, n_in)).astype(dtype)


@dataclass
class HiddenCache:
    """What a hidden layer keeps from its forward pass for the backward pass.

    x : (m, n_in) input;  fp : (m, n_out) f'(a);  zhat : (m, n_out), u : (m, c)
    group statistics (grp+div only);  mask : (m, n_out) dropout mask or None;
    bn : batchnorm's BNCache or None.
    """

    x: Any
    fp: Any
    zhat: Optional[Any]
    u: Optional[Any]
    mask: Optional[Any]
    bn: Optional[Any] = None


class HiddenLayer:
    """A bias-free hidden layer with a layer-local rule (App. D.1).

    Parameters
    ----------
    w : array (n_out, n_in)
        Weights, on the backend.
    rule : Rule
        Kernel, σ, γ, activation and grouping (groups c, p, δ) of the layer.
    divisive : bool
        Pass r = ẑ/u^p (Eq. 21) on instead of z (grp+div).
    bn : threefactor.rule.batchnorm.BatchNorm or None
        Batchnorm between x Wᵀ and f (Table 7's AdamW + batchnorm variants; not
        biologically plausible).  Its γ, β learn with W, from the same objective.
    """

    def __init__(self, w, rule: Rule, divisive: bool = False, bn=None):
        n_out = w.shape[0]
        rule.check_width(n_out)
        self.w, self.rule, self.divisive, self.bn = w, rule, rule.check_divisive(divisive), bn

    def params(self):
        """The learned arrays [W] or [W, γ, β] (with batchnorm), in the order of the gradients."""
        return [self.w] + ([] if self.bn is None else self.bn.params())

    @property
    def shape(self):
        return tuple(self.w.shape)

    def local_forward(self, x, labels, n_classes, backend, mask=None):
        """Forward pass that also computes the local update (Eq. 10, 40).

        Returns
        -------
        out : (m, n_out) what the next layer sees (dropout applied)
        deltas : [ΔW (n_out, n_in)] = [-dL/dW], a descent direction on the layer's L,
            with batchnorm [ΔW, Δγ, Δβ] (the order of :meth:`params`)
        lp : engine.LayerPass, with lp.K, lp.Ky for the objective
        """
        return engine.local_step(self.rule, x, self.w, labels, n_classes, backend,
                                 divisive=self.divisive, bn=self.bn, mask=mask)

    def forward(self, x, backend, mask=None, keep=False, train=None):
        """Forward pass without the local objective (inference, frozen layers, backprop).

        With ``keep=True`` returns ``(out, HiddenCache)`` for the backward pass.
        ``train`` (default: ``keep``) makes batchnorm use batch statistics; it never
        updates the running ones (the training step does, see :meth:`track`).
        """
        rule = self.rule
        train = keep if train is None else train
        _, z, fp, bnc = batchnorm.linear_forward(backend, x, self.w, rule.activation, rule.slope, self.bn, train)
        zhat = u = None
        if self.divisive:
            zhat, u, _ = backend.group_stats(z, rule.groups, rule.p, rule.delta)
            out = backend.divisive_norm(zhat, u, rule.p, mask)      # dropout in the same pass
        else:
            out = z
            if mask is not None:
                out *= mask      # a fresh array of the backend; the cache does not hold it
        if keep:
            return out, HiddenCache(x, fp, zhat, u, mask, bnc)
        return out

    def track(self, cache):
        """Fold a training pass's batch statistics into batchnorm's running ones (no-op without)."""
        if self.bn is not None:
            self.bn.track(cache.bn)


class OutputLayer:
    """Linear read-out with bias, ``logits = x Wᵀ + b``; weights (n_classes, n_in), b (n_classes,)."""

    def __init__(self, w, b):
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias of shape {tuple(b.shape)} for weights {tuple(w.shape)}")
        self.w, self.b = w, b

    def forward(self, x, backend):
        """logits (m, n_classes)."""
        logits = backend.matmul(x, self.w.T)
        logits += self.b
        return logits

    def gradients(self, dlogits, x, backend):
        """dL/dW = dlogitsᵀ x (n_classes, n_in) and dL/db = Σ_i dlogits_i (n_classes,)."""
        return backend.matmul(dlogits.T, x), dlogits.sum(axis=0)


def softmax_cross_entropy(logits, labels, xp=np):
    """Mean softmax cross-entropy and its gradient, written out against the namespace ``xp`` (the
    reference of :meth:`Backend.softmax_cross_entropy`, which networks call: a GPU backend fuses it).

    Parameters
    ----------
    logits : (m, k)
    labels : (m,) integers in [0, k)

    Returns
    -------
    loss : 0-d array, ``-mean_i log softmax(logits_i)[y_i]``
    dlogits : (m, k), ``(softmax(logits) - onehot(y)) / m``
    correct : 0-d integer array, the number of argmax hits
    """
    m = logits.shape[0]
    rows = xp.arange(m)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    logp_true = shifted[rows, labels] - xp.log(s[:, 0])
    loss = -logp_true.mean()
    dlogits = e / s
    correct = (dlogits.argmax(axis=1) == labels).sum()
    dlogits[rows, labels] -= 1
    dlogits *= logits.dtype.type(1.0 / m)
    return loss, dlogits, correct
