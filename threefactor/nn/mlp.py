"""The paper's fully connected network (Sec. 4.2, App. D.1) and one training step.

``MLP`` holds K bias-free hidden layers and a linear output layer with bias.
How it learns is one of :data:`LEARNING`:

``"local"``
    Each hidden layer minimises its own pHSIC objective L_k (Eq. 9) with its
    own optimiser, stepping *during* the forward pass on ΔW_k = -dL_k/dW_k
    (Eq. 10, 40; :func:`threefactor.engine.local_step`).  Only the output
    layer sees the labels through cross-entropy; no error is sent backwards.
``"backprop"``
    The whole network descends the cross-entropy; the backward pass is
    written out in :mod:`threefactor.backprop`.
``"last-layer"``
    Hidden weights stay at their random initial values; only the output layer
    learns (the paper's baseline).

Parameters are named ``hidden.0.w``, ``hidden.1.w``, ..., ``output.w``,
``output.b``; each optimiser is keyed by the layer name (``hidden.k`` or
``output``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import numpy as np

from threefactor.nn import backprop
from threefactor.arrays import real_array
from threefactor.rule.batchnorm import BatchNorm
from threefactor.nn.dropout import dropout_mask
from threefactor.nn.layers import HiddenLayer, OutputLayer, softmax_cross_entropy, uniform_init
from threefactor.nn.optim import make_optimizer
from threefactor.rule.rules import Rule, choice_error

LEARNING = ("local", "backprop", "last-layer")


def _count(argument, value, least):
    """``value`` as an int >= ``least``, else an error naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{argument} must be >= {least}, got {value}")
    return int(value)


def check_learning(learning, batchnorm=False):
    """Validate ``learning`` (one of :data:`LEARNING`) and its combination with batchnorm."""
    if learning not in LEARNING:
        raise choice_error("learning", learning, LEARNING)
    if batchnorm and learning == "last-layer":
        raise ValueError("batchnorm needs learning 'local' or 'backprop': with 'last-layer' the hidden "
                         "layers stay at their random start and batchnorm would have nothing to learn")


@dataclass
class StepStats:
    """Per-batch results, as 0-d backend arrays (no device sync is forced).

    loss : mean cross-entropy;  correct : number of argmax hits;
    objectives : one local objective L_k per hidden layer (empty unless local)
    """

    loss: Any
    correct: Any
    objectives: List[Any] = field(default_factory=list)


def _checked(net, x, labels=None):
    """``net.check_batch(x, labels)`` where the net has one; as given otherwise (the conv nets of
    :mod:`threefactor.conv_layers` borrow :meth:`MLP.logits` and :meth:`MLP.evaluate`)."""
    check = getattr(net, "check_batch", None)
    if check is not None:
        return check(x, labels)
    return x if labels is None else (x, labels)


def check_batch(net, x, labels, sample_shape, expected):
    """A training or test batch of ``net`` (its ``backend``, ``dtype``, ``n_classes``): ``x`` of shape
    (m, *sample_shape) as a backend array of the net's dtype and ``labels`` (m,) as int64, or an error
    naming the argument (``expected`` spells x's shape).  Host arrays are also checked for NaN/Inf (x)
    and for labels outside [0, n_classes); arrays already on a device are not read (no synchronisation)."""
    be = net.backend
    x = real_array(be, x, "x")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x has no samples (m=0)")
    if isinstance(x, np.ndarray) and not np.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    x = be.asarray(x, dtype=net.dtype)
    if labels is None:
        return x
    labels = real_array(be, labels, "labels")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape (m,) = ({x.shape[0]},) (one integer class per row of x), "
                         f"got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if isinstance(labels, np.ndarray) and (labels.min() < 0 or labels.max() >= net.n_classes):
        raise ValueError(f"labels must be in [0, n_classes) = [0, {net.n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return x, be.asarray(labels, dtype=np.int64)


class MLP:
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

    # -- parameters ------------------------------------------------------
    def parameters(self):
        """{name: array} of every learned parameter (the arrays themselves, not copies).

        ``hidden.k.w``, with batchnorm also ``hidden.k.bn_gamma``, ``hidden.k.bn_beta``;
        ``output.w``, ``output.b``.
        """
        params = {}
        for k, layer in enumerate(self.hidden):
            params[f"hidden.{k}.w"] = layer.w
            if getattr(layer, "bn", None) is not None:
                params[f"hidden.{k}.bn_gamma"], params[f"hidden.{k}.bn_beta"] = layer.bn.params()
        params["output.w"], params["output.b"] = self.output.w, self.output.b
        return params

    def state(self):
        """:meth:`parameters` plus batchnorm's running statistics (``hidden.k.bn_mean``,
        ``hidden.k.bn_var``): everything a checkpoint holds."""
        state = dict(self.parameters())
        for k, layer in enumerate(self.hidden):
            if getattr(layer, "bn", None) is not None:
                state.update(layer.bn.state(f"hidden.{k}"))
        return state

    def load_parameters(self, arrays):
        """Copy ``{name: array}`` (host or device) into :meth:`state`, checking names and shapes."""
        for name, dst in self.state().items():
            if name not in arrays:
                raise ValueError(f"checkpoint lacks parameter {name!r}")
            src = arrays[name]
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"parameter {name}: checkpoint shape {tuple(src.shape)} != {tuple(dst.shape)}")
            dst[...] = self.backend.asarray(src, dtype=dst.dtype)

    def make_optimizers(self, lr_local, lr_out, *, weight_decay_local=1e-7, weight_decay_out=1e-6,
                        momentum=0.95, optimizer="sgd"):
        """One optimiser per learning layer, keyed ``hidden.k`` / ``output`` (App. D.1, D.4).

        Local rules: hidden layers use (lr_local, weight_decay_local); backprop:
        every layer uses (lr_out, weight_decay_out); last-layer: output only.
        """
        opts = {}
        if self.learning == "local":
            for k, layer in enumerate(self.hidden):
                opts[f"hidden.{k}"] = make_optimizer(optimizer, layer.params(), lr_local, weight_decay_local,
                                                     momentum)
        elif self.learning == "backprop":
            for k, layer in enumerate(self.hidden):
                opts[f"hidden.{k}"] = make_optimizer(optimizer, layer.params(), lr_out, weight_decay_out, momentum)
        opts["output"] = make_optimizer(optimizer, [self.output.w, self.output.b], lr_out,
                                        weight_decay_out, momentum)
        return opts

    # -- inputs ----------------------------------------------------------
    def check_batch(self, x, labels=None):
        """``x`` (m, n_in) as a backend array of the net's dtype and ``labels`` (m,) as int64, or an
        error naming the argument (:func:`check_batch`)."""
        return check_batch(self, x, labels, (self.n_in,), f"(m, n_in={self.n_in})")

    # -- passes ----------------------------------------------------------
    def _masks(self, rng, m):
        return [dropout_mask(self.backend, rng, (m, layer.shape[0]), self.dropout, self.dtype)
                for layer in self.hidden]

    def features(self, x, masks=None):
        """Output of the last hidden layer (m, n_K), no learning (batchnorm: running statistics)."""
        h = x
        for k, layer in enumerate(self.hidden):
            h = layer.forward(h, self.backend, None if masks is None else masks[k])
        return h

    def logits(self, x):
        """Test-time logits (m, n_classes): no dropout."""
        return self.output.forward(self.features(_checked(self, x)), self.backend)

    def evaluate(self, x, labels, batch_size=2000):
        """(number correct, summed cross-entropy) over a data set, as Python numbers."""
        xp = self.backend.xp
        losses, hits, sizes = [], [], []
        x, labels = _checked(self, x, labels)
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], labels[start:start + batch_size]
            lb, _, cb = softmax_cross_entropy(self.output.forward(self.features(xb), self.backend), yb, xp)
            losses.append(lb)
            hits.append(cb)
            sizes.append(xb.shape[0])
        # read back once (on a GPU one synchronisation for the whole set, not two per batch)
        return (int(self.backend.scalars(hits).sum()),
                float(self.backend.scalars(losses) @ np.asarray(sizes, dtype=np.float64)))

    def train_step(self, x, labels, optimizers, rng):
        """One mini-batch of learning; returns :class:`StepStats`.

        Dropout masks are drawn from ``rng`` (numpy Generator; on the GPU one seed
        per mask, the mask made on the device: :mod:`threefactor.dropout`), one per
        hidden layer in order, so a seeded run is reproducible bit for bit.
        """
        x, labels = self.check_batch(x, labels)
        masks = self._masks(rng, x.shape[0])
        if self.learning == "backprop":
            loss, correct, hidden_grads, out_grads = backprop.forward_backward(
                self, x, labels, masks, self.backend, track=True)
            for k, grads in enumerate(hidden_grads):
                optimizers[f"hidden.{k}"].step(grads)
            optimizers["output"].step(out_grads)
            return StepStats(loss, correct)
        objectives = []
        if self.learning == "local":
            h = x
            for k, layer in enumerate(self.hidden):
                out, deltas, lp = layer.local_forward(h, labels, self.n_classes, self.backend, masks[k])
                optimizers[f"hidden.{k}"].step(deltas, sign=-1.0)   # during the forward pass
                if lp is not None:                                   # None: an online step (no batch L)
                    objectives.append(self.backend.layer_objective(lp.K, lp.Ky, layer.rule.gamma))
                h = out
        else:
            h = self.features(x, masks)
        logits = self.output.forward(h, self.backend)
        loss, dlogits, correct = softmax_cross_entropy(logits, labels, self.backend.xp)
        optimizers["output"].step(list(self.output.gradients(dlogits, h, self.backend)))
        return StepStats(loss, correct, objectives)
