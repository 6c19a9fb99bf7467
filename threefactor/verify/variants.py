"""The matrices of rule variants that ``threefactor check`` runs through the gradcheck driver.

:func:`check_all` (dense: kernel × grouping × activation × label kernel),
:func:`check_conv_all` (conv layers, with and without 2×2 max pooling) and
:func:`check_batchnorm_all` (dense and conv layers with batchnorm) each call the
one driver of :mod:`threefactor.verify.gradcheck` on every variant.
"""
from __future__ import annotations

import itertools

import numpy as np

from threefactor.rule import conv
from threefactor.rule.rules import ACTIVATIONS, GROUPINGS, KERNELS, Rule, choice_error
from threefactor.verify.gradcheck import (_backend_names, check_batchnorm_rule, check_conv_rule, check_rule,
                                          variant_name)

#: (groups, p) of the three groupings in the dense matrix (groups=None: plain).
GROUPING_PARAMS = {"plain": (None, None), "grp": (True, 0.5), "grp+div": (True, 0.2)}


def variants(kernels=KERNELS, groupings=GROUPINGS, activations=ACTIVATIONS,
             label_kernels=("cosine",), groups=4):
    """(name, Rule) of the check matrix: kernel × grouping × activation (× label kernel)."""
    for kern, grouping, act, lk in itertools.product(kernels, groupings, activations, label_kernels):
        if grouping not in GROUPING_PARAMS:
            raise ValueError(f"grouping={grouping!r} is not one of: {', '.join(GROUPINGS)}")
        grp, p = GROUPING_PARAMS[grouping]
        extra = {} if grp is None else {"groups": groups, "p": p}
        rule = Rule(kernel=kern, activation=act, label_kernel=lk, **extra)
        yield variant_name(rule, grouping), rule


def check_all(*, backends=None, kernels=KERNELS, groupings=GROUPINGS, activations=ACTIVATIONS,
              label_kernels=("cosine",), groups=4, **kwargs):
    """:func:`~threefactor.verify.gradcheck.check_rule` over every variant (kernel × {plain, grp, grp+div}
    × activation)."""
    backends = _backend_names() if backends is None else tuple(backends)
    out = []
    for name, rule in variants(kernels, groupings, activations, label_kernels, groups):
        out += check_rule(rule, backends=backends, name=name, **kwargs)
    return out


def conv_variants(kernels=("gaussian", "cosine", "linear"), groupings=("plain", "grp", "grp+div"),
                  activations=("selu",), pools=conv.POOLS, groups=3):
    """(name, Rule, pool) of the conv check matrix: kernel × grouping × activation × pooling.

    grp uses p = 0.5 and grp+div p = 0.2 (App. D.4); ``groups`` must divide the
    checked layer's C_out (6 by default in :func:`~threefactor.verify.gradcheck.check_conv_rule`).
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


def check_conv_all(*, backends=None, kernels=KERNELS, groupings=GROUPINGS, activations=ACTIVATIONS,
                   label_kernels=("cosine",), pools=(None, "max"), dtype=np.float64, seed=0):
    """:func:`~threefactor.verify.gradcheck.check_conv_rule` over the conv matrix (kernel × grouping ×
    activation × pooling × label kernel; named kernels only); method "complex"."""
    backends = _backend_names() if backends is None else tuple(backends)
    kernels = [k for k in kernels if isinstance(k, str)]
    out = []
    for lk in label_kernels:
        for name, rule, pool in conv_variants(kernels, groupings, activations, pools):
            suffix = "/ylinear" if lk == "linear" else ""
            out += check_conv_rule(rule.with_(label_kernel=lk), pool, backends=backends, dtype=dtype,
                                   seed=seed, name=name + suffix)
    return out


def check_batchnorm_all(*, backends=None, kernels=("gaussian", "cosine", "linear"),
                        groupings=("plain", "grp", "grp+div"), activations=("lrelu",),
                        layer_kinds=("dense", "conv"), dtype=np.float64, seed=0, groups=3):
    """:func:`~threefactor.verify.gradcheck.check_batchnorm_rule` over kernel × grouping × activation ×
    layer kind (named kernels)."""
    backends = _backend_names() if backends is None else tuple(backends)
    kernels = [k for k in kernels if isinstance(k, str)]
    out = []
    for name, rule, _ in conv_variants(kernels, groupings, activations, pools=(None,), groups=groups):
        base = name.replace("conv/", "").replace("/pool=None", "")
        for kind in layer_kinds:
            out += check_batchnorm_rule(rule, kind, backends=backends, dtype=dtype, seed=seed,
                                        name=f"bn/{kind}/{base}")
    return out
