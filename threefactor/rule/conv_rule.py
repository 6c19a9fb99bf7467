"""The layer-local rule on a convolutional layer (Sec. 4.3, App. D.1; Eq. 10, 40-48).

The objective is the dense one (Eq. 9, 34) applied to the pooled activity of
each sample flattened channel-major::

    a = conv(x, w)                        (m, C_out, Ho, Wo)     one im2col GEMM
    z = pool(f(a))                        (m, C_out, H', W')     pool: None or 2×2 max
    z_flat = z.reshape(m, C_out·H'·W')    groups = contiguous blocks of C_out/c channels × all positions
    L = pHSIC(Z, Z) - γ pHSIC(Y, Z)       on z_flat, exactly as for a dense layer

Because max pooling commutes with picking the winner, z_flat = f(a_win) with
a_win the pre-activation at each window's winner, so the dense engine's
post-synaptic term with f'(a_win) is -dL/da_win (Eq. 41 / 47-48).  It is routed
to the winning position (zero at the losers) and the update is the Hebbian
product summed over positions (weight sharing)::

    post   (m·Ho·Wo, C_out) = -dL/da in im2col row order
    ΔW     = postᵀ cols = -dL/dW           one GEMM, reshaped to (C_out, C_in, kh, kw)

:func:`threefactor.verify.naive.conv_objective` and :func:`~threefactor.verify.naive.conv_update`
are the slow definitions (explicit conv loops, literal pair sums) that tests compare against;
the public functions (:mod:`threefactor.api`) take conv layers through :func:`conv_layer_pass`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np

from threefactor.rule import batchnorm
from threefactor.rule import conv
from threefactor.rule.engine import LayerPass, represent
from threefactor.rule.rules import Rule, choice_error


@dataclass
class ConvPass:
    """One forward pass of a conv layer's rule.

    lp : LayerPass of the dense engine on the flattened pooled activity (m, C_out·H'·W')
    cols : (m·Ho·Wo, kh·kw·C_in) the pre-synaptic patches
    idx : (m, Ho//2, Wo//2, C_out) winners of the max pool (channel-last), or None
    conv_shape : (m, C_out, Ho, Wo);  out_shape : (m, C_out, H', W');  w_shape
    bn, bn_cache : the layer's BatchNorm and this pass's BNCache, or None
    """

    lp: LayerPass
    cols: Any
    idx: Optional[Any]
    conv_shape: tuple
    out_shape: tuple
    w_shape: tuple
    bn: Optional[Any] = None
    bn_cache: Optional[Any] = None

    def objective(self) -> float:
        """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9, 34) of this batch."""
        return self.lp.objective()

    def post(self):
        """-dL/da (m·Ho·Wo, C_out) in im2col row order: the post-synaptic term per position
        (a: what f sees, batchnorm's output if any)."""
        post = self.lp.post().reshape(self.out_shape)            # -dL/da at the layer's units
        be = self.lp.backend
        return conv.post_rows(post, self.idx, self.conv_shape, be.xp, route=be.route_rows)

    def updates(self):
        """[ΔW] = [-dL/dW] (C_out, C_in, kh, kw), postᵀ cols (one GEMM); with batchnorm
        [ΔW, Δγ, Δβ], the post-synaptic term first pulled back through BN."""
        be = self.lp.backend
        post, bn_deltas = batchnorm.pull_back(self.bn, self.bn_cache, self.post())
        return [conv.cols_to_weights(be.hebbian(post, self.cols), self.w_shape, be.xp)] + bn_deltas

    def update(self):
        """ΔW = -dL/dW (C_out, C_in, kh, kw)."""
        return self.updates()[0]

    def output(self, divisive: bool):
        """z, or r = ẑ/u^p over channel groups (Eq. 21), shape (m, C_out, H', W')."""
        return self.lp.output(divisive).reshape(self.out_shape)


class Activity(NamedTuple):
    """A conv layer's forward half (see :func:`activity`)."""

    cols: Any
    z: Any
    fp: Any
    idx: Optional[Any]
    conv_shape: tuple
    bn: Optional[Any]


def activity(rule: Rule, x, w, padding: int, pool, backend, derivatives=True, bn=None, train=True) -> Activity:
    """Forward half: Activity(cols, z, f'(a_win), idx, conv_shape, bn) with z = pool(f(conv(x, w))).

    z, fp : (m, C_out, H', W'); idx : (m, H', W', C_out) pool winners or None;
    conv_shape : (m, C_out, Ho, Wo).  Pooling happens channel-last, where the GEMM wrote.
    The pre-activation itself is not kept: no update reads it, and laying it out
    would cost a pass over the layer's activity.  With ``derivatives=False`` (inference) fp is None.  With batchnorm ``bn``
    (a :class:`threefactor.rule.batchnorm.BatchNorm` over channels) z = pool(f(BN(conv(x, w)))),
    a is BN's output and ``bn`` of the result its BNCache (None unless ``train``).
    """
    xp = backend.xp
    m, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv.conv_out_size(h, wd, kh, kw, padding)
    cols = backend.im2col(x, kh, kw, padding)
    a, z, fp, bnc = batchnorm.linear_forward(backend, cols, conv.weights_to_cols(w, xp), rule.activation,
                                             rule.slope, bn, train)
    z, fp = (t.reshape(m, ho, wo, c_out) for t in (z, fp))
    idx = None
    extra = (fp,) if derivatives else ()
    if pool == "max":
        z, idx, extra = backend.max_pool_rows(z, *extra)
    fp = backend.rows_to_nchw(extra[0], m, *extra[0].shape[1:3]) if derivatives else None
    return Activity(cols, backend.rows_to_nchw(z, m, *z.shape[1:3]), fp, idx, (m, c_out, ho, wo), bnc)


def conv_layer_pass(rule: Rule, x, w, labels, n_classes: int, backend, padding: int = 1,
                    pool=None, bn=None) -> ConvPass:
    """Run a conv layer's rule on backend arrays x (m, C_in, H, W), w (C_out, C_in, kh, kw)
    (with batchnorm ``bn`` in training mode between conv and f)."""
    act = activity(rule, x, w, padding, pool, backend, bn=bn)
    m = x.shape[0]
    lp = represent(rule, None, act.z.reshape(m, -1), act.fp.reshape(m, -1), labels,
                          n_classes, backend)
    return ConvPass(lp, act.cols, act.idx, act.conv_shape, tuple(act.z.shape), tuple(w.shape), bn, act.bn)


def conv_local_step(rule: Rule, x, w, labels, n_classes: int, backend, padding=1, pool=None,
                    divisive=False, bn=None):
    """One conv layer on one batch: (output (m, C_out, H', W'), [ΔW (, Δγ, Δβ)], ConvPass).  Used by training;
    with batchnorm ``bn`` its running statistics take this batch's (as :func:`threefactor.rule.engine.local_step`)."""
    cp = conv_layer_pass(rule, x, w, labels, n_classes, backend, padding, pool, bn)
    deltas = cp.updates()
    if bn is not None:
        bn.track(cp.bn_cache)
    return cp.output(divisive), deltas, cp


# -- validation of a conv layer's geometry (threefactor.api, threefactor.nn.convnet) ----------

def check_padding(padding):
    """``padding`` must be an int >= 0 (the zero padding of a stride-1 convolution)."""
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise TypeError(f"padding must be an int, got {type(padding).__name__}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


def check_geometry(x_shape, w_shape, padding, pool, groups=None):
    """Validate a conv layer's shapes and options; returns (C_out, H', W')."""
    if len(x_shape) != 4:
        raise ValueError(f"x of a conv layer must be 4-D (m, C_in, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w of a conv layer must be 4-D (C_out, C_in, kh, kw), got shape {tuple(w_shape)}")
    if x_shape[1] != w_shape[1]:
        raise ValueError(f"x has C_in={x_shape[1]} channels but w expects C_in={w_shape[1]} "
                         f"(w shape {tuple(w_shape)})")
    if min(w_shape) < 1:
        raise ValueError(f"w shape {tuple(w_shape)} has an empty dimension")
    check_padding(padding)
    if pool not in conv.POOLS:
        raise choice_error("pool", pool, conv.POOLS)
    ho, wo = conv.conv_out_size(x_shape[2], x_shape[3], w_shape[2], w_shape[3], int(padding))
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {w_shape[2]}x{w_shape[3]} with padding={padding} does not fit the "
                         f"{x_shape[2]}x{x_shape[3]} input")
    h2, w2 = conv.pool_out_size(ho, wo, pool)
    if h2 < 1 or w2 < 1:
        raise ValueError(f"pool='max' needs a conv output of at least 2x2, got {ho}x{wo}")
    c_out = w_shape[0]
    if groups is not None and c_out % groups:
        raise ValueError(f"groups={groups} does not divide the number of output channels "
                         f"C_out={c_out} (a conv group is a block of whole channels)")
    return c_out, h2, w2
