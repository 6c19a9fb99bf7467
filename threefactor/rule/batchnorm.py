"""Batch normalisation (Ioffe & Szegedy 2015) with its gradient written out.

The AdamW + batchnorm variants of the paper's conv nets (App. D.1, D.4, D.6; Table 7)
put batchnorm between the linear/conv operation and the nonlinearity::

    a = x Wᵀ (or conv)  ->  b = BN(a)  ->  z = f(b)  ->  pool  ->  local objective ...

**Not biologically plausible** (Sec. 4.3): every unit's update needs statistics of the
whole batch, and γ, β learn by gradient steps.  The paper uses it only to show how
the rules fare with the tricks of deep learning; threefactor marks such runs
``plausible: false``.

Per channel over the N rows of a (N, C) matrix (rows are samples for dense layers,
samples × positions for conv layers, in the im2col row order)::

    μ = mean_i a_i,   s² = mean_i (a_i - μ)²,   â = (a - μ)/√(s² + ε),   b = γ â + β

The vector-Jacobian product, for ḡ = dL/db (the same formula maps -dL/db to -dL/da,
it is linear)::

    dL/dγ = Σ_i ḡ_i â_i,   dL/dβ = Σ_i ḡ_i
    dL/da_i = γ/√(s² + ε) · (ḡ_i - mean_i ḡ - â_i · mean_i(ḡ â))

At test time b = γ (a - r_μ)/√(r_σ² + ε) + β with running statistics updated
after every training batch, r ← (1 - ρ) r + ρ (μ, s² N/(N - 1)) (PyTorch's
convention: unbiased variance in the running average).  App. D.4: ρ = 0.1,
ε = 1e-5, γ = 1 and β = 0 at the start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from threefactor.rule.activations import activate

#: App. D.4 ("Batchnorm had momentum of 0.1 and ε = 1e-5").
MOMENTUM = 0.1
EPS = 1e-5


@dataclass
class BNCache:
    """One training-mode pass: â (N, C), 1/√(s² + ε) (C,), μ (C,), s² (C,), N."""

    ahat: Any
    inv_std: Any
    mean: Any
    var: Any
    n: int


class BatchNorm:
    """Per-channel batchnorm of a layer with C channels; arrays live on ``backend``.

    gamma, beta : (C,) learned scale and shift;  running_mean, running_var : (C,) buffers.
    """

    def __init__(self, channels, backend, dtype=np.float32, momentum=MOMENTUM, eps=EPS):
        if not 0.0 < float(momentum) <= 1.0:
            raise ValueError(f"batchnorm momentum must be in (0, 1], got {momentum!r}")
        if not float(eps) > 0.0:
            raise ValueError(f"batchnorm eps must be > 0, got {eps!r}")
        dtype = np.dtype(dtype)
        self.momentum, self.eps = float(momentum), float(eps)
        self.gamma = backend.asarray(np.ones(channels, dtype))
        self.beta = backend.asarray(np.zeros(channels, dtype))
        self.running_mean = backend.asarray(np.zeros(channels, dtype))
        self.running_var = backend.asarray(np.ones(channels, dtype))

    def forward(self, a, train=True):
        """b = γ â + β of rows ``a`` (N, C): batch statistics when ``train`` (returns (b, BNCache)),
        running statistics otherwise (returns (b, None)).  Does not touch the running statistics."""
        t = a.dtype.type
        if train:
            n = a.shape[0]
            if n < 2:
                raise ValueError(f"batchnorm needs at least 2 rows per channel in training, got {n}")
            mean = a.mean(axis=0)
            ahat = a - mean
            var = (ahat * ahat).mean(axis=0)
            inv_std = 1.0 / (var + t(self.eps)) ** 0.5
            ahat *= inv_std
            cache = BNCache(ahat, inv_std, mean, var, n)
        else:
            ahat = (a - self.running_mean) / (self.running_var + t(self.eps)) ** 0.5
            cache = None
        return ahat * self.gamma + self.beta, cache

    def track(self, cache: BNCache):
        """Fold one training batch's statistics into the running ones (in place)."""
        rho = cache.mean.dtype.type(self.momentum)
        self.running_mean *= 1 - rho
        self.running_mean += rho * cache.mean
        self.running_var *= 1 - rho
        self.running_var += (rho * cache.n / (cache.n - 1)) * cache.var

    def vjp(self, cache: BNCache, g):
        """(dL/da (N, C), dL/dγ (C,), dL/dβ (C,)) from g = dL/db (N, C)."""
        dbeta = g.sum(axis=0)
        dgamma = (g * cache.ahat).sum(axis=0)
        n = g.dtype.type(1.0 / cache.n)
        ga = g - dbeta * n
        ga -= cache.ahat * (dgamma * n)
        ga *= self.gamma * cache.inv_std
        return ga, dgamma, dbeta

    def params(self):
        """The learned parameters [γ, β], in the order of :meth:`vjp`'s gradients."""
        return [self.gamma, self.beta]

    def state(self, prefix):
        """{name: array} of parameters and running statistics, names ``<prefix>.bn_*``."""
        return {f"{prefix}.bn_gamma": self.gamma, f"{prefix}.bn_beta": self.beta,
                f"{prefix}.bn_mean": self.running_mean, f"{prefix}.bn_var": self.running_var}


def linear_forward(backend, x, w, activation, slope, bn=None, train=True):
    """a = x wᵀ -> (BN) -> z = f(a): returns (a, z, f'(a), BNCache or None).

    ``a`` is what f sees (BN's output when ``bn`` is given).  Without batchnorm it is
    the backend's fused forward primitive; with it, GEMM, :meth:`BatchNorm.forward`,
    then the activation.  ``train`` picks batch (True) or running statistics.
    """
    if bn is None:
        a, z, fp = backend.forward(x, w, activation, slope)
        return a, z, fp, None
    a, cache = bn.forward(backend.matmul(x, w.T), train)
    z, fp = activate(a, activation, slope, backend.xp)
    return a, z, fp, cache


def pull_back(bn, cache, g):
    """Map a gradient at BN's output to its input: (g at the GEMM output, [dγ, dβ] or []).

    Without batchnorm the identity.  Linear in g, so it maps -dL/db to -dL/da too.
    """
    if bn is None:
        return g, []
    ga, dgamma, dbeta = bn.vjp(cache, g)
    return ga, [dgamma, dbeta]
