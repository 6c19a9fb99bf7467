"""Declarative description of a layer-local learning rule (no array code here).

A :class:`Rule` says *what* a hidden layer optimises — the kernel on its
representation, σ, γ, the activation, the grouping (plain | grp | grp+div),
p and δ — and nothing about *how* it is computed.  Backends
(:mod:`threefactor.backends`) run the few primitives a rule needs; the
engine (:mod:`threefactor.rule.engine`) composes them.

The layer objective is Eq. 9 / Eq. 34 of Pogodin & Latham (2020)::

    L = pHSIC(Z, Z) - γ pHSIC(Y, Z)
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import numpy as np

from threefactor.names import Vocabulary, is_object_spec, unknown_name
from threefactor.rule.grouping import group_size
from threefactor.rule.kernels import COSINE_EPS, KERNEL_CLASSES, KERNEL_NAMES, is_builtin, kernel_label, resolve_kernel

KERNELS = ("gaussian", "cosine", "linear")      # the built-in kernels (every registered one: kernel_names())
ACTIVATIONS = ("linear", "relu", "lrelu", "selu")
LABEL_KERNELS = ("cosine", "linear")
GROUPINGS = ("plain", "grp", "grp+div")

#: the names of activations, label kernels and groupings (case-insensitive, with old spellings)
ACTIVATION_NAMES = Vocabulary("activation")
for _name, _aliases in (("linear", ("identity",)), ("relu", ()), ("lrelu", ("leaky-relu", "leaky_relu")),
                        ("selu", ())):
    ACTIVATION_NAMES.add(_name, _aliases)
LABEL_KERNEL_NAMES = Vocabulary("label_kernel")
LABEL_KERNEL_NAMES.add("cosine", ("cossim", "cos"))
LABEL_KERNEL_NAMES.add("linear")
GROUPING_NAMES = Vocabulary("grouping")
GROUPING_NAMES.add("plain", ("none",))
GROUPING_NAMES.add("grp", ("grouped",))
GROUPING_NAMES.add("grp+div", ("grpdiv", "grp-div", "grp_div"))

#: p of the group normalisation per grouping (App. D.4): the one place a grouping's p is defined
GROUPING_P = {"plain": None, "grp": 0.5, "grp+div": 0.2}


def choice_error(argument: str, value: Any, choices) -> ValueError:
    """A ValueError naming the argument and the bad value: the nearest choices ("did you mean"),
    the whole list only when it is short."""
    return unknown_name(argument, value, choices)


def _finite_number(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except (TypeError, ValueError):        # e.g. a numpy array of more than one element
        raise TypeError(f"{argument} must be a real number (a scalar), got {type(value).__name__} "
                        f"of shape {getattr(value, 'shape', '?')}") from None
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Rule:
    """A layer-local pHSIC rule (Eq. 9, 34) with its kernel and grouping.

    Parameters
    ----------
    kernel : str or Kernel object
        Kernel on the representation v (Eq. 24-26): a registered name, any case or
        alias ("gaussian" or "gauss", "cosine" or "cossim", "linear", or one added with
        :func:`threefactor.register_kernel`), ``path/to/file.py:Class`` /
        ``package.module:Class``, or an object with ``matrix(v, xp)`` and
        ``pullback(v, K, C, xp)`` methods (see :class:`threefactor.Kernel`).  A built-in
        is kept as its canonical name; anything else as the kernel object.
    sigma : float
        Width σ > 0 of the Gaussian kernel (Eq. 26).
    gamma : float
        Balance γ ≥ 0 between compression and prediction (Eq. 9).
    activation : {"linear", "relu", "lrelu", "selu"} (any case)
    slope : float
        Negative slope of the leaky ReLU.
    groups : int or None
        Number c of contiguous neuron groups (Eq. 17-18); None is the plain rule.
    p : float in [0, 1)
        Exponent of the group normalisation (Eq. 18, 21).
    delta : float > 0
        Offset δ of the smoothed group variance (Eq. 17).
    label_kernel : {"cosine", "linear"}
        Centred cosine (Eq. 35) or centred linear (Eq. 36) kernel on labels.
    """

    kernel: Any = "gaussian"
    sigma: float = 5.0
    gamma: float = 2.0
    activation: str = "lrelu"
    slope: float = 0.01
    groups: Optional[int] = None
    p: float = 0.2
    delta: float = 1.0
    label_kernel: str = "cosine"
    cosine_eps: float = field(default=COSINE_EPS)

    def __post_init__(self):
        k = self.kernel
        if isinstance(k, str) and not is_object_spec(k):
            k = KERNEL_NAMES.resolve(k, "kernel")          # an unknown name: the nearest registered ones
        if isinstance(k, str) and is_builtin(KERNEL_CLASSES.get(k)):
            pass                                         # a built-in stays a name (the backends' fast paths)
        elif isinstance(k, (str, type)):
            k = None                                     # a class: built from the validated rule, below
        else:
            k = resolve_kernel(k)                        # an object: checked for matrix and pullback
        if isinstance(self.activation, str) and self.activation.lower() in ACTIVATION_NAMES:
            object.__setattr__(self, "activation", ACTIVATION_NAMES.resolve(self.activation))
        if isinstance(self.label_kernel, str) and self.label_kernel.lower() in LABEL_KERNEL_NAMES:
            object.__setattr__(self, "label_kernel", LABEL_KERNEL_NAMES.resolve(self.label_kernel))
        sigma = _finite_number("sigma", self.sigma)
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if not 1e-150 <= sigma <= 1e150:        # 1/σ² and σ² must stay finite non-zero doubles
            raise ValueError(f"sigma={sigma:g} is out of range: 1/(2σ²) must be a finite, non-zero number "
                             "(1e-150 <= sigma <= 1e150)")
        gamma = _finite_number("gamma", self.gamma)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if self.activation not in ACTIVATIONS:
            raise choice_error("activation", self.activation, ACTIVATIONS)
        slope = _finite_number("slope", self.slope)
        p = _finite_number("p", self.p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        delta = _finite_number("delta", self.delta)
        if delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        if self.label_kernel not in LABEL_KERNELS:
            raise choice_error("label_kernel", self.label_kernel, LABEL_KERNELS)
        eps = _finite_number("cosine_eps", self.cosine_eps)
        if eps <= 0:
            raise ValueError(f"cosine_eps must be > 0, got {eps}")
        g = self.groups
        if g is not None:
            if isinstance(g, bool) or not isinstance(g, int) and not hasattr(g, "__index__"):
                raise TypeError(f"groups must be an int or None, got {type(g).__name__}")
            g = int(g)
            if g < 1:
                raise ValueError(f"groups must be >= 1, got {g}")
            if g == 1:
                raise ValueError("groups=1 makes the representation identically zero (Eq. 18: v_α = u_α^(1-p) "
                                 "minus its mean over the groups), so the layer would learn nothing: use "
                                 "groups >= 2, or groups=None for the plain rule")
            if g == 2 and k == "cosine":
                warnings.warn("groups=2 with the cosine kernel is degenerate: v = (a, -a), so K = ±1 and "
                              "dL/dW is nearly 0; use >= 3 groups", UserWarning, stacklevel=3)
        for name, val in (("sigma", sigma), ("gamma", gamma), ("slope", slope), ("p", p),
                          ("delta", delta), ("cosine_eps", eps), ("groups", g)):
            object.__setattr__(self, name, val)
        if k is None:
            k = resolve_kernel(self.kernel, rule=self)   # from_rule(self) where the class has one
        object.__setattr__(self, "kernel", k)

    @property
    def grouped(self) -> bool:
        return self.groups is not None

    def check_divisive(self, divisive) -> bool:
        """``bool(divisive)``; a ValueError if it is set on an ungrouped rule (Eq. 21 is per group),
        a TypeError if it is not a bool (``divisive="no"`` would be true)."""
        if not isinstance(divisive, (bool, np.bool_)) and divisive not in (0, 1):
            raise TypeError(f"divisive must be True or False, got {type(divisive).__name__} {divisive!r}")
        if divisive and not self.grouped:
            raise ValueError("divisive=True needs groups: a grouped rule (groups=c), since divisive "
                             "normalisation is per group (Eq. 21)")
        return bool(divisive)

    def check_width(self, n_out: int) -> int:
        """Validate grouping against the layer width; return the group size g."""
        if self.groups is None:
            return n_out
        c = self.groups
        g = group_size(n_out, c)
        if g < 2:
            raise ValueError(
                f"groups={c} leaves groups of {g} neuron for n_out={n_out}: a group needs at "
                "least 2 neurons (its centred activity would be identically zero)")
        return g

    def with_(self, **changes) -> "Rule":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def kernel_name(self) -> str:
        return kernel_label(self.kernel)


