"""The paper's fully connected network (Sec. 4.2, App. D.1) and one training step.

``MLP`` holds K bias-free hidden layers and a linear output layer with bias.
How it learns is one of :data:`LEARNING`:

``"local"``
    Each hidden layer minimises its own pHSIC objective L_k (Eq. 9) with its
    own optimiser, stepping *during* the forward pass on ΔW_k = -dL_k/dW_k
    (Eq. 10, 40; :func:`threefactor.rule.engine.local_step`).  Only the output
    layer sees the labels through cross-entropy; no error is sent backwards.
``"backprop"``
    The whole network descends the cross-entropy; the backward pass is
    written out in :mod:`threefactor.nn.backprop`.
``"last-layer"``
    Hidden weights stay at their random initial values; only the output layer
    learns (the paper's baseline).

Parameters are named ``hidden.0.w``, ``hidden.1.w``, ..., ``output.w``,
``output.b``; each optimiser is keyed by the layer name (``hidden.k`` or
``output``).
"""
from __future__ import annotations

import numpy as np

from threefactor.nn import backprop
from threefactor.nn.dropout import dropout_mask
from threefactor.nn.layers import HiddenLayer, OutputLayer, uniform_init
from threefactor.nn.network import LEARNING, Network, StepStats, check_learning  # noqa: F401  (re-exported)
from threefactor.rule.batchnorm import BatchNorm
from threefactor.rule.rules import Rule
from threefactor.validate import check_batch


def _count(argument, value, least):
    """``value`` as an int >= ``least``, else an error naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{argument} must be >= {least}, got {value}")
    return int(value)


class MLP(Network):
    """Fully connected net: ``n_in -> hidden[0] -> ... -> hidden[-1] -> n_classes``.

    Parameters
    ----------
    n_in : int
        Input size (784 for the MNIST family, 3072 for CIFAR-10).
    hidden : sequence of int
        Hidden widths (the paper: 1024, 1024, 1024).
    n_classes : int
    rule : Rule
        The hidden layers' rule; its activation and grouping (c, p, δ) also
        define the forward pass for backprop and last-layer.
    divisive : bool
        Divisive normalisation r = ẑ/u^p (Eq. 21) after each hidden layer.
    learning : {"local", "backprop", "last-layer"}
    dropout : float
        Dropout probability after each hidden layer (App. D.5: 0.01).
    backend : backend object (see :func:`threefactor.get_backend`)
    dtype : numpy dtype (float32 by default)
    rng : numpy.random.Generator
        Draws the initial weights, U(±1/√fan_in) for W and b.
    batchnorm : bool
        Batchnorm between each hidden layer's x Wᵀ and f (App. D.1; the AdamW +
        batchnorm variants of Table 7).  Not biologically plausible; needs
        learning "local" or "backprop".
    """

    def __init__(self, n_in, hidden, n_classes, rule: Rule, *, divisive=False, learning="local",
                 dropout=0.01, backend, dtype=np.float32, rng, batchnorm=False):
        check_learning(learning, batchnorm)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n_in, n_classes = _count("n_in", n_in, 1), _count("n_classes", n_classes, 2)
        if isinstance(hidden, (int, np.integer)) or not hidden:
            raise ValueError(f"hidden must list at least one hidden width, got {hidden!r}")
        hidden = [_count("hidden width", n, 1) for n in hidden]
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        self.n_in = n_in
        self.rule, self.learning, self.dropout = rule, learning, float(dropout)
        self.backend, self.dtype, self.n_classes = backend, np.dtype(dtype), int(n_classes)
        self.hidden = []
        for n_prev, n_out in zip([n_in, *hidden[:-1]], hidden):
            w = backend.asarray(uniform_init(rng, n_out, n_prev, self.dtype))
            bn = BatchNorm(n_out, backend, self.dtype) if batchnorm else None
            self.hidden.append(HiddenLayer(w, rule, divisive, bn))
        w = uniform_init(rng, n_classes, hidden[-1], self.dtype)
        bound = 1.0 / np.sqrt(hidden[-1])
        b = rng.uniform(-bound, bound, n_classes).astype(self.dtype)
        self.output = OutputLayer(backend.asarray(w), backend.asarray(b))
        if backend.xp is np:                 # steps in a loop: freed buffers stay in the heap (threefactor.heap)
            from threefactor.heap import keep_for_loops
            keep_for_loops()

    # -- inputs ----------------------------------------------------------
    def check_batch(self, x, labels=None):
        """``x`` (m, n_in) as a backend array of the net's dtype and ``labels`` (m,) as int64, or an
        error naming the argument (:func:`threefactor.validate.check_batch`)."""
        return check_batch(self, x, labels, (self.n_in,), f"(m, n_in={self.n_in})")

    # -- passes ----------------------------------------------------------
    def _masks(self, rng, m):
        return [dropout_mask(self.backend, rng, (m, layer.shape[0]), self.dropout, self.dtype)
                for layer in self.hidden]

    def _drops(self, rng, m):
        """One (mask, None) dropout pair per hidden layer (the MLP adds nothing after the mask)."""
        return [(mask, None) for mask in self._masks(rng, m)]

    def _dropped_features(self, x, drops):
        return self.features(x, [mask for mask, _ in drops])

    def forward_backward(self, x, labels, drops, track=False):
        """Backprop's loss, hits and gradients (:func:`threefactor.nn.backprop.forward_backward`)."""
        return backprop.forward_backward(self, x, labels, [mask for mask, _ in drops], self.backend, track=track)

    def features(self, x, masks=None):
        """Output of the last hidden layer (m, n_K), no learning (batchnorm: running statistics)."""
        self._flush_deferred()
        h = x
        for k, layer in enumerate(self.hidden):
            h = layer.forward(h, self.backend, None if masks is None else masks[k])
        return h
