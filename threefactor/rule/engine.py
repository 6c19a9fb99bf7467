"""The layer-local rule, composed from backend primitives (Eq. 10, 12, 22, 40-48).

For one hidden layer and one mini-batch::

    a = x wᵀ,  z = f(a)                                  forward (one GEMM)
    v = z  or  v = u^(1-p) - mean_α u^(1-p)              Eq. 17-18
    K = k(v_i, v_j),  Ky = k(y_i, y_j)                   Eq. 26, 35
    -dL/dv = (2/σ²) L_A v,  A = (2 k̊z - γ k̊y) ⊙ K / m²    Eq. 40-42 (Gaussian)
    post = -dL/da                                         Eq. 41 / 47-48
    ΔW = postᵀ x = -dL/dW                                 the Hebbian product

No autograd: every step is written out.  ``post`` is the post-synaptic term
and x the pre-synaptic one; the third factor is folded into ``post`` through
the graph Laplacian, so the pair sums of Eq. 12 / 22 cost one GEMM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from threefactor.rule import batchnorm
from threefactor.rule.kernels import kernel_object
from threefactor.rule.objective import kernel_coefficient, layer_objective
from threefactor.rule.rules import Rule


@dataclass
class LayerPass:
    """Everything one forward pass of a layer computes (arrays of the backend).

    a, z, fp : (m, n_out)  pre-activation (None for a conv layer's flattened pass), activity, f'(a)
    zhat : (m, n_out) or None, u : (m, c) or None   group statistics (Eq. 17)
    v : (m, d)   representation compared by the kernel (d = n_out or c)
    K, Ky : (m, m)   kernel matrices of the layer and of the labels
    """

    rule: Rule
    backend: Any
    a: Any
    z: Any
    fp: Any
    zhat: Optional[Any]
    u: Optional[Any]
    v: Any
    K: Any
    Ky: Any

    def objective(self) -> float:
        """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9, 34) of this batch."""
        return float(layer_objective(self.K, self.Ky, self.rule.gamma))

    def post(self):
        """Post-synaptic term -dL/da (m, n_out): the third factor already folded in."""
        rule, be = self.rule, self.backend
        if rule.kernel == "gaussian":
            A = be.gaussian_weights(self.K, self.Ky, rule.gamma)
            neg_dv = be.laplacian(A, self.v)
            scale = 2.0 / rule.sigma ** 2
        else:
            C = kernel_coefficient(self.K, self.Ky, rule.gamma)
            neg_dv = -kernel_object(rule).pullback(self.v, self.K, C, be.xp)
            scale = 1.0
        if rule.grouped:
            return be.post_grouped(neg_dv, self.zhat, self.u, self.fp, rule.p, scale)
        return be.post_plain(neg_dv, self.fp, scale)

    def output(self, divisive: bool, mask=None):
        """What the layer passes on: r = ẑ/u^p with divisive normalisation (Eq. 21), else z;
        times the dropout ``mask`` if given (in the same pass as r; z itself is left alone)."""
        if self.rule.check_divisive(divisive):
            return self.backend.divisive_norm(self.zhat, self.u, self.rule.p, mask)
        return self.z if mask is None else self.z * mask


def layer_pass(rule: Rule, x, w, labels, n_classes: int, backend) -> LayerPass:
    """Run the forward half of a layer's rule on backend arrays ``x``, ``w``, ``labels``.

    A grouped rule takes the forward pass and its group statistics from one primitive
    (``forward_grouped``), which a backend may fuse."""
    if rule.grouped:
        a, z, fp, zhat, u, v = backend.forward_grouped(x, w, rule.activation, rule.slope, rule.groups,
                                                       rule.p, rule.delta)
        return _with_kernels(rule, a, z, fp, zhat, u, v, labels, n_classes, backend)
    a, z, fp = backend.forward(x, w, rule.activation, rule.slope)
    return represent(rule, a, z, fp, labels, n_classes, backend)


def represent(rule: Rule, a, z, fp, labels, n_classes: int, backend) -> LayerPass:
    """Kernel matrices of activity z (m, n) already computed (dense or flattened conv)."""
    zhat = u = None
    if rule.grouped:
        zhat, u, v = backend.group_stats(z, rule.groups, rule.p, rule.delta)
    else:
        v = z
    return _with_kernels(rule, a, z, fp, zhat, u, v, labels, n_classes, backend)


def _with_kernels(rule: Rule, a, z, fp, zhat, u, v, labels, n_classes: int, backend) -> LayerPass:
    """The LayerPass of representation v: its kernel matrix and the label kernel (Eq. 26, 35)."""
    if rule.kernel == "gaussian":
        K = backend.gaussian_kernel(v, rule.sigma)
    else:
        K = kernel_object(rule).matrix(v, backend.xp)
    Ky = backend.label_kernel(labels, n_classes, rule.label_kernel, z.dtype)
    return LayerPass(rule, backend, a, z, fp, zhat, u, v, K, Ky)


def local_step(rule: Rule, x, w, labels, n_classes: int, backend, divisive=False, bn=None, mask=None):
    """One layer on one batch: (output, deltas, LayerPass).  Used by training.

    The output is :meth:`LayerPass.output` (with the dropout ``mask`` if given).

    deltas = [ΔW] = [-dL/dW]; with batchnorm ``bn`` between x wᵀ and f
    (:mod:`threefactor.rule.batchnorm`) the post-synaptic term is pulled back through it,
    deltas = [ΔW, Δγ, Δβ], and its running statistics take this batch's.
    """
    if bn is None:
        lp = layer_pass(rule, x, w, labels, n_classes, backend)
        post, bn_deltas = lp.post(), []
    else:
        a, z, fp, cache = batchnorm.linear_forward(backend, x, w, rule.activation, rule.slope, bn)
        lp = represent(rule, a, z, fp, labels, n_classes, backend)
        post, bn_deltas = batchnorm.pull_back(bn, cache, lp.post())
        bn.track(cache)
    return lp.output(divisive, mask), [backend.hebbian(post, x)] + bn_deltas, lp
