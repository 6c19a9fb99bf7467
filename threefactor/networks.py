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

from . import backprop
from .batchnorm import BatchNorm
from .dropout import dropout_mask
from .layers import HiddenLayer, OutputLayer, softmax_cross_entropy, uniform_init
from .optim import make_optimizer
from .rules import Rule, choice_error

LEARNING = ("local", "backprop", "last-layer")


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
        if not hidden:
            raise ValueError("hidden must list at least one hidden width")
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
        return self.output.forward(self.features(x), self.backend)

    def evaluate(self, x, labels, batch_size=2000):
        """(number correct, summed cross-entropy) over a data set, as Python numbers."""
        xp = self.backend.xp
        losses, hits, sizes = [], [], []
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], labels[start:start + batch_size]
            lb, _, cb = softmax_cross_entropy(self.logits(xb), yb, xp)
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
                objectives.append(self.backend.layer_objective(lp.K, lp.Ky, layer.rule.gamma))
                h = out
        else:
            h = self.features(x, masks)
        logits = self.output.forward(h, self.backend)
        loss, dlogits, correct = softmax_cross_entropy(logits, labels, self.backend.xp)
        optimizers["output"].step(list(self.output.gradients(dlogits, h, self.backend)))
        return StepStats(loss, correct, objectives)
