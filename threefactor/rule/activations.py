"""Activations f and their derivatives f' (reference, any array namespace).

Written so that complex inputs work too (comparisons use the real part):
:mod:`threefactor.verify.gradcheck` differentiates the objective by the complex step.
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.rules import ACTIVATIONS, choice_error

#: SELU constants (Klambauer et al. 2017; paper App. D.4).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def activate(a, name="lrelu", slope=0.01, xp=np):
    """Apply f and return ``(z, f'(a))``.

    Parameters
    ----------
    a : array (m, n_out)
        Pre-activation ``x @ w.T`` (Eq. 1).
    name : {"linear", "relu", "lrelu", "selu"}
    slope : float
        Negative slope of the leaky ReLU.

    Returns
    -------
    z, fprime : arrays (m, n_out), same dtype as ``a``.
    """
    if name == "linear":
        return a, xp.ones_like(a)
    pos = a.real > 0
    one = xp.ones_like(a)
    if name == "relu":
        return xp.where(pos, a, 0 * a), xp.where(pos, one, 0 * one)
    if name == "lrelu":
        return xp.where(pos, a, slope * a), xp.where(pos, one, slope * one)
    if name == "selu":
        neg = SELU_SCALE * SELU_ALPHA * xp.exp(xp.where(pos, 0 * a, a))
        return (xp.where(pos, SELU_SCALE * a, neg - SELU_SCALE * SELU_ALPHA),
                xp.where(pos, SELU_SCALE * one, neg))
    raise choice_error("activation", name, ACTIVATIONS)
