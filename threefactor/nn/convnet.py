"""Convolutional networks of the paper (Sec. 4.3, App. D.1, D.6), trained by local rules or backprop.

Each hidden layer (App. D.1)::

    conv (3×3, padding 1, stride 1, no bias)  ->  f (SELU for SGD, LReLU for AdamW)
      ->  2×2 max pool (if any)  ->  local objective (reads the activity, does not change it)
      ->  r = ẑ/u^p over channel groups (grp+div, Eq. 21)  ->  dropout (alpha dropout with SELU)

followed by fully connected hidden layers (:class:`threefactor.nn.layers.HiddenLayer`)
and the linear output layer.  Architectures are strings of blocks, e.g. the
paper's ``vgg``: ``conv128-conv256-pool-conv512-pool-conv512-pool-fc1024``
(``pool`` belongs to the conv layer before it; ``width`` multiplies conv channels
only, as in the paper's 2x net).  :class:`ConvNet` has the methods of
:class:`threefactor.nn.mlp.MLP`: both are a :class:`threefactor.nn.network.Network`
(parameters, make_optimizers, train_step, evaluate, ...), so the trainer runs it unchanged.

Shapes: x (m, C, H, W); conv weights (C_out, C_in, 3, 3); dense weights (n_out, n_in).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from threefactor.nn import backprop
from threefactor.rule import batchnorm
from threefactor.rule import conv
from threefactor.rule import conv_rule
from threefactor.rule.batchnorm import BatchNorm
from threefactor.nn.dropout import alpha_dropout, dropout_mask  # noqa: F401  (alpha_dropout re-exported)
from threefactor.nn.layers import HiddenLayer, OutputLayer, uniform_init
from threefactor.nn.network import Network, check_learning
from threefactor.validate import check_batch
from threefactor.training.presets import TABLE6, TABLE6_BN, TABLE6_SHARED, table6_preset  # noqa: F401  (re-exported)
from threefactor.rule.rules import Rule

#: Named architectures (Sec. 4.3); ``small`` is the CPU benchmark net for 28×28 images.
ARCHS = {
    "vgg": "conv128-conv256-pool-conv512-pool-conv512-pool-fc1024",
    "small": "conv32-pool-conv64-pool-fc256",
}

def parse_arch(spec, width=1):
    """``"conv128-conv256-pool-fc1024"`` (or a name in :data:`ARCHS`) -> blocks.

    Returns a list of ``("conv", C_out, pool)`` and ``("fc", n_out)`` tuples;
    ``pool`` is None or "max" (a ``pool`` token pools the conv layer before it).
    Conv channels are multiplied by ``width``.
    """
    spec = ARCHS.get(spec, spec)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    blocks = []
    for token in str(spec).split("-"):
        if token == "pool":
            if not blocks or blocks[-1][0] != "conv" or blocks[-1][2] is not None:
                raise ValueError(f"arch {spec!r}: 'pool' must follow a conv layer (at most once)")
            blocks[-1] = ("conv", blocks[-1][1], "max")
        elif token.startswith("conv") and token[4:].isdigit() and int(token[4:]) > 0:
            if blocks and blocks[-1][0] == "fc":
                raise ValueError(f"arch {spec!r}: conv layers must come before fc layers")
            blocks.append(("conv", int(token[4:]) * int(width), None))
        elif token.startswith("fc") and token[2:].isdigit() and int(token[2:]) > 0:
            blocks.append(("fc", int(token[2:])))
        else:
            raise ValueError(f"arch {spec!r}: bad block {token!r} (expected convN, pool or fcN; "
                             f"names: {', '.join(ARCHS)})")
    if not blocks:
        raise ValueError("arch must list at least one layer")
    return blocks


@dataclass
class ConvCache:
    """A conv layer's forward pass, kept for backprop.

    cols : (m·Ho·Wo, kh·kw·C_in) patches;  fp : (m, C_out, H', W') f'(a) at the (winning) units;
    idx : pool winners or None;  conv_shape : (m, C_out, Ho, Wo);  zhat, u : group statistics
    (grp+div) on the flattened activity;  mask : multiplicative dropout factor or None;
    bn : batchnorm's BNCache or None.
    """

    cols: Any
    fp: Any
    idx: Optional[Any]
    conv_shape: tuple
    zhat: Optional[Any]
    u: Optional[Any]
    mask: Optional[Any]
    bn: Optional[Any] = None


class ConvLayer:
    """A bias-free conv layer with a layer-local rule (App. D.1); mirrors :class:`HiddenLayer`.

    Parameters
    ----------
    w : array (C_out, C_in, kh, kw), on the backend
    rule : Rule   (groups must divide C_out: groups are blocks of whole channels)
    divisive : bool   pass r = ẑ/u^p (Eq. 21) on instead of z
    padding : int   zero padding of the stride-1 convolution (1 keeps 3×3 "same")
    pool : None or "max"   2×2 max pooling after the nonlinearity
    in_hw : (H, W) of the input, to validate the grouping against the output size
    bn : threefactor.rule.batchnorm.BatchNorm over the C_out channels, or None (Table 7's
        AdamW + batchnorm variants: conv -> BN -> f; not biologically plausible)
    """

    def __init__(self, w, rule: Rule, divisive=False, padding=1, pool=None, in_hw=None, bn=None):
        self.w, self.rule, self.divisive, self.bn = w, rule, rule.check_divisive(divisive), bn
        self.padding, self.pool = int(padding), pool
        if in_hw is not None:
            c_out, h2, w2 = conv_rule.check_geometry((2, w.shape[1]) + tuple(in_hw), w.shape, padding,
                                                     pool, rule.groups)
            rule.check_width(c_out * h2 * w2)
            self.out_chw = (c_out, h2, w2)

    @property
    def shape(self):
        return tuple(self.w.shape)

    params = HiddenLayer.params
    track = HiddenLayer.track

    def local_forward(self, x, labels, n_classes, backend, mask=None):
        """Forward pass with the local update: (out (m, C_out, H', W'), deltas, LayerPass);
        deltas = [ΔW = -dL/dW] or, with batchnorm, [ΔW, Δγ, Δβ] (the order of :meth:`params`)."""
        out, deltas, cp = conv_rule.conv_local_step(self.rule, x, self.w, labels, n_classes, backend,
                                                    self.padding, self.pool, self.divisive, self.bn)
        if mask is not None:
            out = out * mask
        return out, deltas, cp.lp

    def forward(self, x, backend, mask=None, keep=False, train=None):
        """Forward pass without the objective; ``keep=True`` also returns a :class:`ConvCache`.
        ``train`` (default: ``keep``) makes batchnorm use batch statistics (running ones untouched)."""
        rule = self.rule
        act = conv_rule.activity(rule, x, self.w, self.padding, self.pool, backend, derivatives=keep,
                                 bn=self.bn, train=keep if train is None else train)
        z = act.z
        zhat = u = None
        out = z
        if self.divisive:
            m = z.shape[0]
            zhat, u, _ = backend.group_stats(z.reshape(m, -1), rule.groups, rule.p, rule.delta)
            out = backend.divisive_norm(zhat, u, rule.p).reshape(z.shape)
        if mask is not None:
            out = out * mask
        if keep:
            return out, ConvCache(act.cols, act.fp, act.idx, act.conv_shape, zhat, u, mask, act.bn)
        return out


def conv_vjp(layer, cache, g_out, backend, need_input_grad=True):
    """Backward pass of a conv layer: ([dL/dW (C_out, C_in, kh, kw)], dL/dx (m, C_in, H, W) or None).

    g_out : (m, C_out, H', W') = dL/d(output).  Dropout, divisive normalisation
    (:func:`threefactor.nn.backprop.divisive_norm_vjp`), f', routing through the max
    pool, batchnorm (if any: the list becomes [dL/dW, dL/dγ, dL/dβ]), then
    dL/dW = postᵀ cols (one GEMM) and dL/dx = col2im(post · w_cols).
    """
    xp = backend.xp
    g = backprop.dropout_vjp(g_out, cache.mask)
    if layer.divisive:
        m = g.shape[0]
        g = backprop.divisive_norm_vjp(g.reshape(m, -1), cache.zhat, cache.u, layer.rule.p).reshape(g.shape)
    rows = conv.post_rows(g * cache.fp, cache.idx, cache.conv_shape, xp, route=backend.route_rows)
    rows, bn_grads = batchnorm.pull_back(layer.bn, cache.bn, rows)
    wc = conv.weights_to_cols(layer.w, xp)
    grads = [conv.cols_to_weights(backend.hebbian(rows, cache.cols), layer.w.shape, xp)] + bn_grads
    if not need_input_grad:
        return grads, None
    m, c_in = g.shape[0], layer.w.shape[1]
    h = cache.conv_shape[2] - 2 * layer.padding + layer.w.shape[2] - 1
    wd = cache.conv_shape[3] - 2 * layer.padding + layer.w.shape[3] - 1
    g_in = backend.col2im(backend.matmul(rows, wc), (m, c_in, h, wd), layer.w.shape[2], layer.w.shape[3],
                          layer.padding)
    return grads, g_in


class ConvNet(Network):
    """Conv layers, then fc hidden layers, then a linear output layer (Sec. 4.3).

    Parameters
    ----------
    in_shape : (C, H, W) of the images
    arch : str   a name in :data:`ARCHS` or a block string (see :func:`parse_arch`)
    n_classes : int
    rule : Rule   every hidden layer's rule (activation, grouping c, p, δ, kernel)
    divisive, learning, dropout, backend, dtype, rng : as for :class:`threefactor.nn.mlp.MLP`
        (``dropout`` is alpha dropout when the activation is SELU, App. D.4)
    width : int   multiplies the conv channels (the paper's 2x net: width=2)
    kernel_size, padding : conv geometry (3, 1 in the paper)
    batchnorm : bool   batchnorm after every conv / fc operation, before f (App. D.1; Table 7's
        AdamW + batchnorm variants, not biologically plausible); learning "local" or "backprop"
    """

    def __init__(self, in_shape, arch, n_classes, rule: Rule, *, divisive=False, learning="local",
                 dropout=0.05, backend, dtype=np.float32, rng, width=1, kernel_size=3, padding=1,
                 batchnorm=False):
        check_learning(learning, batchnorm)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {tuple(in_shape)}")
        self.rule, self.learning, self.dropout = rule, learning, float(dropout)
        self.backend, self.dtype, self.n_classes = backend, np.dtype(dtype), int(n_classes)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.alpha_dropout = rule.activation == "selu"
        self.blocks = parse_arch(arch, width)
        self.hidden, self.out_shapes = [], []
        shape = tuple(int(s) for s in in_shape)
        for block in self.blocks:
            bn = BatchNorm(block[1], backend, self.dtype) if batchnorm else None
            if block[0] == "conv":
                c_out, pool = block[1], block[2]
                w = uniform_init(rng, c_out, shape[0] * kernel_size ** 2, self.dtype)
                w = backend.asarray(w.reshape(c_out, shape[0], kernel_size, kernel_size))
                layer = ConvLayer(w, rule, divisive, padding, pool, shape[1:], bn)
                shape = layer.out_chw
            else:
                n_in = int(np.prod(shape))
                layer = HiddenLayer(backend.asarray(uniform_init(rng, block[1], n_in, self.dtype)), rule,
                                    divisive, bn)
                shape = (block[1],)
            self.hidden.append(layer)
            self.out_shapes.append(shape)
        n_last = int(np.prod(shape))
        w = uniform_init(rng, n_classes, n_last, self.dtype)
        b = rng.uniform(-1 / np.sqrt(n_last), 1 / np.sqrt(n_last), n_classes).astype(self.dtype)
        self.output = OutputLayer(backend.asarray(w), backend.asarray(b))

    def _drops(self, rng, m):
        """One (mult, add) dropout pair per hidden layer (device arrays or None)."""
        be, out = self.backend, []
        for shape in self.out_shapes:
            if self.alpha_dropout:
                out.append(alpha_dropout(be, rng, (m,) + shape, self.dropout, self.dtype))
            else:
                out.append((dropout_mask(be, rng, (m,) + shape, self.dropout, self.dtype), None))
        return out

    @staticmethod
    def _input_of(layer, h):
        """Flatten conv activity (m, C, H, W) before a dense layer."""
        return h.reshape(h.shape[0], -1) if isinstance(layer, HiddenLayer) and h.ndim != 2 else h

    def features(self, x, drops=None, train=False):
        """Output of the last hidden layer (m, n), no learning, no dropout unless ``drops``;
        batchnorm uses batch statistics when ``train``, else the running ones."""
        self._flush_deferred()
        h = x
        for k, layer in enumerate(self.hidden):
            mult, add = (None, None) if drops is None else drops[k]
            h = layer.forward(self._input_of(layer, h), self.backend, mult, train=train)
            if add is not None:
                h = h + add
        return h.reshape(h.shape[0], -1)

    def check_batch(self, x, labels=None):
        """``x`` (m, C, H, W) as a backend array of the net's dtype and ``labels`` (m,) as int64, or an
        error naming the argument (:func:`threefactor.validate.check_batch`)."""
        c, h, w = self.in_shape
        return check_batch(self, x, labels, self.in_shape, f"(m, C, H, W) = (m, {c}, {h}, {w})")

    def forward_backward(self, x, labels, drops, track=False):
        """Mean cross-entropy and the gradient of every parameter, written out (no autograd).

        Returns (loss, correct, [[dL/dW_k (, dL/dγ_k, dL/dβ_k)] per hidden layer], [dL/dW_out, dL/db]).
        ``track`` folds the batch statistics into batchnorm's running ones (training does).
        """
        be = self.backend
        h, caches = x, []
        for layer, (mult, add) in zip(self.hidden, drops):
            h, cache = layer.forward(self._input_of(layer, h), be, mult, keep=True)
            if add is not None:
                h = h + add
            caches.append(cache)
            if track:
                layer.track(cache)
        h = h.reshape(h.shape[0], -1)
        loss, dlogits, correct = be.softmax_cross_entropy(self.output.forward(h, be), labels)
        out_grads = list(self.output.gradients(dlogits, h, be))
        g = be.matmul(dlogits, self.output.w)
        hidden_grads = [None] * len(self.hidden)
        for k in range(len(self.hidden) - 1, -1, -1):
            layer = self.hidden[k]
            g = g.reshape((g.shape[0],) + self.out_shapes[k])
            vjp = conv_vjp if isinstance(layer, ConvLayer) else backprop.hidden_vjp
            hidden_grads[k], g = vjp(layer, caches[k], g, be, need_input_grad=k > 0)
        return loss, correct, hidden_grads, out_grads

    def loss(self, x, labels, drops=None):
        """Mean cross-entropy with fixed dropout ``drops`` and batchnorm on batch statistics
        (what :meth:`forward_backward` differentiates)."""
        logits = self.output.forward(self.features(x, drops, train=True), self.backend)
        return self.backend.softmax_cross_entropy(logits, labels)[0]
