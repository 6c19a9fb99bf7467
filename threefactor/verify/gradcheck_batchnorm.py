"""Gradient checks of the local rule through batchnorm (``threefactor check --batchnorm``).

A layer with batchnorm before f (:mod:`threefactor.batchnorm`; the AdamW + batchnorm
variants of Table 7) learns W, γ and β from its own objective.  Each of the three
updates (ΔW, Δγ, Δβ of ``layer.local_forward``) is compared with the complex-step
-dL/d(·) of the naive objective (explicit batch statistics, pair sums; conv layers by
explicit loops), dense layers and conv layers with 2×2 max pooling alike.
"""
from __future__ import annotations

import numpy as np

from threefactor.verify import naive as pairwise
from threefactor.backends import get_backend
from threefactor.rule.batchnorm import BatchNorm, naive_batchnorm
from threefactor.verify.gradcheck import TOLERANCES, CheckResult, _backend_names, complex_step_gradient, relative_error

#: Parameters compared, in the order of ``layer.params()``.
PARAMS = ("W", "gamma", "beta")


def _problem(layer_kind, rule, m, n_classes, seed):
    """(x, w, γ, β, labels, naive L(w, γ, β)) of a small float64 problem."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(m) % n_classes)
    if layer_kind == "dense":
        n_in, n_out = 5, 2 * (rule.groups or 3)
        x = rng.normal(size=(m, n_in))
        w = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
        eye = np.eye(n_out)

        def loss(w_, g_, b_):
            return pairwise.objective(naive_batchnorm(x @ w_.T, g_, b_), eye, labels, n_classes, rule)
    else:
        from threefactor.rule.conv_rule import naive_objective
        c_out = 2 * (rule.groups or 3)
        x = rng.normal(size=(m, 2, 4, 4))
        w = rng.normal(size=(c_out, 2, 3, 3)) / np.sqrt(18)

        def loss(w_, g_, b_):
            return naive_objective(x, w_, labels, n_classes, rule, 1, "max", bn=(g_, b_))
    gamma = rng.uniform(0.5, 1.5, w.shape[0])
    beta = rng.normal(0.0, 0.3, w.shape[0])
    return x, w, gamma, beta, labels, loss


def _layer(layer_kind, rule, w, bn, divisive):
    from threefactor.nn.convnet import ConvLayer
    from threefactor.nn.layers import HiddenLayer
    if layer_kind == "dense":
        return HiddenLayer(w, rule, divisive, bn)
    return ConvLayer(w, rule, divisive, 1, "max", None, bn)


def check_batchnorm_rule(rule, layer_kind="dense", *, backends=("numpy",), dtype=np.float64, m=6,
                         n_classes=3, seed=0, name=None):
    """Compare (ΔW, Δγ, Δβ) of a layer with batchnorm with the complex-step gradient.

    ``layer_kind`` is "dense" or "conv" (3×3 conv, C_in 2, 4×4 images, 2×2 max pool).
    Grouped rules pass r = ẑ/u^p on (divisive), which does not change the updates.
    Returns one :class:`threefactor.check.CheckResult` per backend and parameter
    (``worst`` is (unit or channel, flat input index); (channel, 0) for γ and β).
    """
    if layer_kind not in ("dense", "conv"):
        raise ValueError(f"layer_kind must be 'dense' or 'conv', got {layer_kind!r}")
    x, w, gamma, beta, labels, loss = _problem(layer_kind, rule, m, n_classes, seed)
    cast = [a.astype(dtype).astype(np.float64) for a in (w, gamma, beta)]
    refs = [complex_step_gradient(lambda v: loss(v, cast[1], cast[2]), cast[0]),
            complex_step_gradient(lambda v: loss(cast[0], v, cast[2]), cast[1]),
            complex_step_gradient(lambda v: loss(cast[0], cast[1], v), cast[2])]
    dt = np.dtype(dtype).name
    tol = TOLERANCES[dt]["complex"]
    name = name or f"bn/{layer_kind}/{rule.kernel_name}/{'plain' if rule.groups is None else rule.groups}"
    results = []
    for b in backends:
        be = get_backend(b)
        bn = BatchNorm(w.shape[0], be, dtype)
        bn.gamma[...] = be.asarray(gamma.astype(dtype))
        bn.beta[...] = be.asarray(beta.astype(dtype))
        layer = _layer(layer_kind, rule, be.asarray(w.astype(dtype)), bn, rule.grouped)
        _, deltas, _ = layer.local_forward(be.asarray(x.astype(dtype)), be.asarray(labels), n_classes, be)
        for param, got, ref in zip(PARAMS, deltas, refs):
            got = be.to_numpy(got).reshape(len(ref), -1).astype(np.float64)
            ref2 = ref.reshape(len(ref), -1)
            err, worst = relative_error(got, ref2)
            results.append(CheckResult(f"{name}: {param}", b, "complex", dt, err, worst,
                                       float(got[worst]), float(ref2[worst]), bool(err <= tol), tol))
    return results


def check_batchnorm_all(*, backends=None, kernels=("gaussian", "cosine", "linear"),
                        groupings=("plain", "grp", "grp+div"), activations=("lrelu",),
                        layer_kinds=("dense", "conv"), dtype=np.float64, seed=0, groups=3):
    """:func:`check_batchnorm_rule` over kernel × grouping × activation × layer kind (named kernels)."""
    from threefactor.rule.conv_rule import conv_variants
    backends = _backend_names() if backends is None else tuple(backends)
    kernels = [k for k in kernels if isinstance(k, str)]
    out = []
    for name, rule, _ in conv_variants(kernels, groupings, activations, pools=(None,), groups=groups):
        base = name.replace("conv/", "").replace("/pool=None", "")
        for kind in layer_kinds:
            out += check_batchnorm_rule(rule, kind, backends=backends, dtype=dtype, seed=seed,
                                        name=f"bn/{kind}/{base}")
    return out
