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

:func:`naive_objective` and :func:`naive_update` are the slow definitions
(explicit conv loops, literal pair sums) that tests compare against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import numpy as np

from threefactor.rule import batchnorm
from threefactor.rule import conv
from threefactor.rule import engine
from threefactor.verify import naive as pairwise
from threefactor.api import _array, _check_finite, _float_dtype, _labels
from threefactor.backends import get_backend
from threefactor.rule.rules import Rule, choice_error
from threefactor.rule.third_factor import third_factor_grouped, third_factor_plain


@dataclass
class ConvPass:
    """One forward pass of a conv layer's rule.

    lp : LayerPass of the dense engine on the flattened pooled activity (m, C_out·H'·W')
    cols : (m·Ho·Wo, kh·kw·C_in) the pre-synaptic patches
    idx : (m, Ho//2, Wo//2, C_out) winners of the max pool (channel-last), or None
    conv_shape : (m, C_out, Ho, Wo);  out_shape : (m, C_out, H', W');  w_shape
    bn, bn_cache : the layer's BatchNorm and this pass's BNCache, or None
    """

    lp: engine.LayerPass
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
    (a :class:`threefactor.batchnorm.BatchNorm` over channels) z = pool(f(BN(conv(x, w)))),
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
    fp = conv.rows_to_nchw(extra[0], m, *extra[0].shape[1:3], xp) if derivatives else None
    return Activity(cols, conv.rows_to_nchw(z, m, *z.shape[1:3], xp), fp, idx, (m, c_out, ho, wo), bnc)


def conv_layer_pass(rule: Rule, x, w, labels, n_classes: int, backend, padding: int = 1,
                    pool=None, bn=None) -> ConvPass:
    """Run a conv layer's rule on backend arrays x (m, C_in, H, W), w (C_out, C_in, kh, kw)
    (with batchnorm ``bn`` in training mode between conv and f)."""
    act = activity(rule, x, w, padding, pool, backend, bn=bn)
    m = x.shape[0]
    lp = engine.represent(rule, None, act.z.reshape(m, -1), act.fp.reshape(m, -1), labels,
                          n_classes, backend)
    return ConvPass(lp, act.cols, act.idx, act.conv_shape, tuple(act.z.shape), tuple(w.shape), bn, act.bn)


def conv_local_step(rule: Rule, x, w, labels, n_classes: int, backend, padding=1, pool=None,
                    divisive=False, bn=None):
    """One conv layer on one batch: (output (m, C_out, H', W'), [ΔW (, Δγ, Δβ)], ConvPass).  Used by training;
    with batchnorm ``bn`` its running statistics take this batch's (as :func:`threefactor.engine.local_step`)."""
    cp = conv_layer_pass(rule, x, w, labels, n_classes, backend, padding, pool, bn)
    deltas = cp.updates()
    if bn is not None:
        bn.track(cp.bn_cache)
    return cp.output(divisive), deltas, cp


# -- validation and the public functions (dispatched from threefactor.api) ----------

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


def prepare_conv(x, w, y, backend, n_classes=None, padding=1, pool=None, groups=None):
    """Validate and convert a conv layer's (x, w, y); returns (be, x, w, labels, n, to_user)."""
    be = get_backend(backend)
    x = _array(be, x, "x")
    w = _array(be, w, "w")
    native = be.is_native(x)
    c_out, h2, w2 = check_geometry(x.shape, w.shape, padding, pool, groups)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least m=2 samples (a kernel compares pairs), got m={x.shape[0]}")
    dt = _float_dtype([x, w], ["x", "w"])
    x = be.asarray(x, dtype=dt)
    w = be.asarray(w, dtype=dt)
    _check_finite(be, x, "x")
    _check_finite(be, w, "w")
    labels = n = None
    if y is not None:
        labels, n = _labels(be, y, x.shape[0], n_classes)
    to_user = (lambda a: a) if native else be.to_numpy
    return be, x, w, labels, n, to_user


def _pass(x, w, y, rule, padding, pool, backend, n_classes):
    if y is None:
        raise TypeError("y is required: one-hot labels (m, n_classes) or integer labels (m,)")
    be, x, w, labels, n, to_user = prepare_conv(x, w, y, backend, n_classes, padding, pool, rule.groups)
    c_out, h2, w2 = check_geometry(x.shape, w.shape, padding, pool)
    rule.check_width(c_out * h2 * w2)
    with np.errstate(over="ignore", invalid="ignore"):     # reported just below
        cp = conv_layer_pass(rule, x, w, labels, n, be, int(padding), pool)
    if not bool(be.xp.isfinite(cp.lp.z).all()):
        raise ValueError("conv(x, w) overflows (Inf or NaN in the layer's activity): x and w are finite but "
                         f"too large for {cp.lp.z.dtype}")
    return be, cp, to_user


def local_objective(x, w, y, rule, padding=1, pool=None, backend="numpy", n_classes=None):
    """L of a conv layer (see :func:`threefactor.local_objective`)."""
    return _pass(x, w, y, rule, padding, pool, backend, n_classes)[1].objective()


def local_update(x, w, y, rule, padding=1, pool=None, backend="numpy", n_classes=None):
    """ΔW = -dL/dW (C_out, C_in, kh, kw) of a conv layer (see :func:`threefactor.local_update`)."""
    _, cp, to_user = _pass(x, w, y, rule, padding, pool, backend, n_classes)
    return to_user(cp.update())


def third_factor(x, w, y, rule, padding=1, pool=None, backend="numpy", n_classes=None):
    """M (m, m) or (groups, m, m) of a conv layer's Gaussian rule (Eq. 12b, 22)."""
    be, cp, to_user = _pass(x, w, y, rule, padding, pool, backend, n_classes)
    lp = cp.lp
    if rule.grouped:
        g = rule.check_width(lp.z.shape[1])
        return to_user(third_factor_grouped(lp.K, lp.Ky, lp.v, rule.gamma, rule.sigma, rule.p, g, be.xp))
    return to_user(third_factor_plain(lp.K, lp.Ky, rule.gamma, rule.sigma))


def layer_output(x, w, rule, divisive=False, padding=1, pool=None, backend="numpy"):
    """z = pool(f(conv(x, w))) or r = ẑ/u^p over channel groups (Eq. 21): (m, C_out, H', W')."""
    be, x, w, _, _, to_user = prepare_conv(x, w, None, backend, None, padding, pool, rule.groups)
    c_out, h2, w2 = check_geometry(x.shape, w.shape, padding, pool)
    rule.check_width(c_out * h2 * w2)
    z = activity(rule, x, w, int(padding), pool, be, derivatives=False).z
    if not divisive:
        return to_user(z)
    m = z.shape[0]
    zhat, u, _ = be.group_stats(z.reshape(m, -1), rule.groups, rule.p, rule.delta)
    return to_user(be.divisive_norm(zhat, u, rule.p).reshape(z.shape))


# -- the naive definitions (tests only: explicit loops, literal pair sums) ----------

def naive_activity(x, w, rule, padding=1, pool=None, bn=None):
    """(z, f'(a), winners) by explicit loops; winners[(i, o, y', x')] = (y, x) of the conv grid.

    ``bn`` = (γ, β): batchnorm per channel over samples and positions before f
    (:func:`threefactor.batchnorm.naive_batchnorm`, batch statistics).
    """
    from threefactor.rule.activations import activate
    a = conv.naive_conv2d(x, w, padding)
    if bn is not None:
        m, c, ho, wo = a.shape
        rows = batchnorm.naive_batchnorm(a.transpose(0, 2, 3, 1).reshape(-1, c), *bn)
        a = rows.reshape(m, ho, wo, c).transpose(0, 3, 1, 2)
    z, fp = activate(a, rule.activation, rule.slope, np)
    m, c, ho, wo = a.shape
    if pool is None:
        return z, fp, {(i, o, yy, xx): (yy, xx) for i in range(m) for o in range(c)
                       for yy in range(ho) for xx in range(wo)}
    zp, (wy, wx) = conv.naive_max_pool2x2(z)
    win = {k: (int(wy[k]), int(wx[k])) for k in np.ndindex(zp.shape)}
    fpp = np.array([fp[k[0], k[1], win[k][0], win[k][1]] for k in np.ndindex(zp.shape)]).reshape(zp.shape)
    return zp, fpp, win


def naive_objective(x, w, labels, n_classes, rule, padding=1, pool=None, bn=None):
    """L by the definitions (complex-step safe): loops for conv and pooling, pair sums for pHSIC
    (``bn`` = (γ, β): batchnorm before f, see :func:`naive_activity`)."""
    z, _, _ = naive_activity(x, w, rule, padding, pool, bn)
    zf = z.reshape(z.shape[0], -1)
    return pairwise.objective(zf, np.eye(zf.shape[1]), labels, n_classes, rule.with_(activation="linear"))


def naive_update(x, w, labels, n_classes, rule, padding=1, pool=None):
    """ΔW as the literal pair sum over (i, j) of Eq. 12 / 22, each unit (channel, pooled position)
    contributing through its winner's patch, summed over positions (weight sharing).

    Gaussian kernel only (the 3-factor form); ΔW_o = Σ_ij Σ_pos M_ij (z_i - z_j)(f'_i x_i - f'_j x_j)
    (plain) or Σ_ij Σ_pos M_α,ij (h_i x_i - h_j x_j), h = f' ẑ/u^p (grouped), x = patch at the winner.
    """
    z, fp, win = naive_activity(x, w, rule, padding, pool)
    m = z.shape[0]
    kh, kw = w.shape[2:]
    zf, fpf = z.reshape(m, -1), fp.reshape(m, -1)
    lin = rule.with_(activation="linear")
    eye = np.eye(zf.shape[1])
    M = pairwise.third_factor(zf, eye, labels, n_classes, lin)
    if rule.groups is not None:
        _, _, zhat, u, _ = pairwise.representation(zf, eye, lin)
        g = zf.shape[1] // rule.groups
        h = fpf * zhat / np.repeat(u ** rule.p, g, axis=1)
    dw = np.zeros(w.shape, dtype=np.result_type(x, w))
    keys = list(np.ndindex(z.shape[1:]))
    for n, (o, py, px) in enumerate(keys):
        patch = [conv.naive_patch(x, padding, kh, kw, i, *win[(i, o, py, px)]) for i in range(m)]
        for i in range(m):
            for j in range(m):
                if rule.groups is None:
                    dw[o] += M[i, j] * (zf[i, n] - zf[j, n]) * (fpf[i, n] * patch[i] - fpf[j, n] * patch[j])
                else:
                    dw[o] += M[n // g, i, j] * (h[i, n] * patch[i] - h[j, n] * patch[j])
    return dw


# -- gradcheck of conv variants (for threefactor.check) --------------------------------

def conv_variants(kernels=("gaussian", "cosine", "linear"), groupings=("plain", "grp", "grp+div"),
                  activations=("selu",), pools=conv.POOLS, groups=3):
    """(name, Rule, pool) of the conv check matrix: kernel × grouping × activation × pooling.

    grp uses p = 0.5 and grp+div p = 0.2 (App. D.4); ``groups`` must divide the
    checked layer's C_out (6 by default in :func:`check_conv_rule`).
    """
    params = {"plain": (None, 0.2), "grp": (groups, 0.5), "grp+div": (groups, 0.2)}
    for kern in kernels:
        for grouping in groupings:
            if grouping not in params:
                raise choice_error("grouping", grouping, tuple(params))
            for act in activations:
                for pool in pools:
                    g, p = params[grouping]
                    rule = Rule(kernel=kern, activation=act, groups=g, p=p)
                    yield f"conv/{kern}/{grouping}/{act}/pool={pool}", rule, pool


def check_conv_rule(rule, pool=None, *, backends=("numpy",), dtype=np.float64, m=4, c_in=2, hw=4,
                    c_out=6, kernel_size=3, padding=1, n_classes=3, seed=0, name=None):
    """Compare a conv layer's ``local_update`` with complex-step -dL/dW of :func:`naive_objective`.

    Returns a list of :class:`threefactor.check.CheckResult` (method "complex"),
    one per backend; ΔW is compared as (C_out, C_in·kh·kw), so the worst synapse
    is (output channel, flattened (c, dy, dx)).  Tolerances are the checker's.
    """
    from threefactor.verify.gradcheck import TOLERANCES, CheckResult, complex_step_gradient, relative_error
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(m) % n_classes)
    x = rng.normal(size=(m, c_in, hw, hw)).astype(dtype)
    w = (rng.normal(size=(c_out, c_in, kernel_size, kernel_size)) / np.sqrt(c_in * kernel_size ** 2)).astype(dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = complex_step_gradient(
        lambda v: naive_objective(x64, v, labels, n_classes, rule, padding, pool), w64).reshape(c_out, -1)
    dt = np.dtype(dtype).name
    tol = TOLERANCES[dt]["complex"]
    name = name or f"conv/{rule.kernel_name}/{'plain' if rule.groups is None else f'grp(p={rule.p:g})'}/" \
                   f"{rule.activation}/pool={pool}"
    results = []
    for b in backends:
        be, xb, wb, lab, n, to_user = prepare_conv(x, w, labels, b, n_classes, padding, pool, rule.groups)
        dw = np.asarray(to_user(conv_layer_pass(rule, xb, wb, lab, n, be, padding, pool).update()))
        dw = dw.reshape(c_out, -1)
        err, (i, k) = relative_error(dw, ref)
        results.append(CheckResult(name, b, "complex", dt, err, (i, k), float(dw[i, k]), float(ref[i, k]),
                                   bool(err <= tol), tol))
    return results
