"""What every network of threefactor shares: parameters, optimisers, evaluation and the training step.

:class:`threefactor.nn.mlp.MLP` and :class:`threefactor.nn.convnet.ConvNet` are
hidden layers (each with ``local_forward``, ``forward``, ``params``) followed by
a linear output layer; they differ only in their layers, how dropout is drawn
and how a layer's input is shaped.  The training step is written once here: a
local rule steps each hidden layer's optimiser during the forward pass (App. D.1),
backprop steps every layer after the backward pass, last-layer trains the output
layer only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, List

import numpy as np

from threefactor.nn.optim import make_optimizer
from threefactor.rule.rules import choice_error

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


class Network:
    """Hidden layers ``self.hidden`` then ``self.output``, on ``self.backend`` (the shared half).

    A subclass sets ``hidden``, ``output``, ``backend``, ``dtype``, ``n_classes``, ``learning`` and
    defines :meth:`check_batch`, :meth:`features`, :meth:`forward_backward` and :meth:`_drops`
    (and :meth:`_input_of` where a layer needs its input reshaped).
    """

    #: The optimisers whose online hidden layers' steps are deferred (:meth:`deferred_steps`), or None.
    _deferred = None

    # -- deferred steps (the online rule at B = 1, 2: one pass over W per sample) ----------------
    @contextlib.contextmanager
    def deferred_steps(self, optimizers):
        """Within the block, :meth:`train_step` (with these ``optimizers``) leaves each online hidden
        layer's SGD step pending and the layer takes it at its next forward pass, fused with it where
        the backend can (Numba, B = 1 or 2 streams: each W is read and written once per sample instead
        of twice; :meth:`threefactor.nn.optim.SGD.step` with ``defer=True``).  The same steps in the same
        order, so the same learning up to float rounding of the forward products.  Leaving the block
        takes what is pending; so do :meth:`parameters`, :meth:`state`, :meth:`logits`,
        :meth:`evaluate` and ``features`` inside it.  A layer's ``w`` read directly inside the block
        lags by its last step.  ``threefactor train`` runs each epoch's steps in such a block."""
        self._flush_deferred(stop=True)
        self._deferred = optimizers
        try:
            yield self
        finally:
            self._flush_deferred(stop=True)

    def _flush_deferred(self, stop=False):
        """Take every deferred step (see :meth:`deferred_steps`); ``stop``: and leave deferral off."""
        optimizers = self._deferred
        if stop:
            self._deferred = None
        for opt in (optimizers or {}).values():
            if hasattr(opt, "flush"):
                opt.flush()

    # -- parameters ------------------------------------------------------
    def parameters(self):
        """{name: array} of every learned parameter (the arrays themselves, not copies).

        ``hidden.k.w``, with batchnorm also ``hidden.k.bn_gamma``, ``hidden.k.bn_beta``;
        ``output.w``, ``output.b``.
        """
        self._flush_deferred()
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
        be, opts = self.backend, {}
        if self.learning == "local":
            for k, layer in enumerate(self.hidden):
                opts[f"hidden.{k}"] = make_optimizer(optimizer, layer.params(), lr_local, weight_decay_local,
                                                     momentum, be)
        elif self.learning == "backprop":
            for k, layer in enumerate(self.hidden):
                opts[f"hidden.{k}"] = make_optimizer(optimizer, layer.params(), lr_out, weight_decay_out,
                                                     momentum, be)
        opts["output"] = make_optimizer(optimizer, [self.output.w, self.output.b], lr_out,
                                        weight_decay_out, momentum, be)
        return opts

    # -- passes ----------------------------------------------------------
    @staticmethod
    def _input_of(layer, h):
        """A hidden layer's input from the previous layer's output (as it is; ConvNet flattens)."""
        return h

    def logits(self, x):
        """Test-time logits (m, n_classes): no dropout."""
        self._flush_deferred()
        return self.output.forward(self.features(self.check_batch(x)), self.backend)

    def evaluate(self, x, labels, batch_size=2000):
        """(number correct, summed cross-entropy) over a data set, as Python numbers."""
        self._flush_deferred()
        losses, hits, sizes = [], [], []
        x, labels = self.check_batch(x, labels)
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], labels[start:start + batch_size]
            lb, _, cb = self.backend.softmax_cross_entropy(self.output.forward(self.features(xb), self.backend), yb)
            losses.append(lb)
            hits.append(cb)
            sizes.append(xb.shape[0])
        # read back once (on a GPU one synchronisation for the whole set, not two per batch)
        return (int(self.backend.scalars(hits).sum()),
                float(self.backend.scalars(losses) @ np.asarray(sizes, dtype=np.float64)))

    def train_step(self, x, labels, optimizers, rng):
        """One mini-batch of learning; returns :class:`StepStats`.

        Dropout is drawn from ``rng`` (numpy Generator; on the GPU one seed per mask, the mask
        made on the device: :mod:`threefactor.nn.dropout`), one draw per hidden layer in order,
        so a seeded run is reproducible bit for bit.  Local rules step each hidden layer during
        the forward pass, with its ΔW = -dL/dW as a descent direction (``sign=-1``).
        """
        x, labels = self.check_batch(x, labels)
        be = self.backend
        drops = self._drops(rng, x.shape[0])
        if self.learning == "backprop":
            loss, correct, hidden_grads, out_grads = self.forward_backward(x, labels, drops, track=True)
            for k, grads in enumerate(hidden_grads):
                optimizers[f"hidden.{k}"].step(grads)
            optimizers["output"].step(out_grads)
            return StepStats(loss, correct)
        objectives = []
        deferring = self._deferred is optimizers and optimizers is not None
        if self._deferred is not None and not deferring:
            self._flush_deferred()
        if self.learning == "local":
            h = x
            for k, layer in enumerate(self.hidden):
                mult, add = drops[k]
                opt = optimizers[f"hidden.{k}"]
                if deferring and getattr(layer, "takes_pending", False) and hasattr(opt, "take_pending"):
                    # the last step of this layer is taken in its forward pass; this one left pending
                    out, deltas, lp = layer.local_forward(self._input_of(layer, h), labels, self.n_classes, be,
                                                          mult, pending=opt.take_pending())
                    opt.step(deltas, sign=-1.0, defer=True)
                else:
                    out, deltas, lp = layer.local_forward(self._input_of(layer, h), labels, self.n_classes, be,
                                                          mult)
                    opt.step(deltas, sign=-1.0)   # during the forward pass
                if lp is not None:                                   # None: an online step (no batch L)
                    objectives.append(be.layer_objective(lp.K, lp.Ky, layer.rule.gamma))
                h = out if add is None else out + add
            h = h.reshape(h.shape[0], -1)
        else:
            h = self._dropped_features(x, drops)
        logits = self.output.forward(h, be)
        loss, dlogits, correct = be.softmax_cross_entropy(logits, labels)
        optimizers["output"].step(list(self.output.gradients(dlogits, h, be)))
        return StepStats(loss, correct, objectives)

    def _dropped_features(self, x, drops):
        """Output of the last hidden layer with this step's dropout (last-layer learning)."""
        return self.features(x, drops)
