"""The third factor M of the Gaussian rules (Eq. 12b, 22, 47), normalised so that
the literal pair sums of :mod:`threefactor.verify.naive` give ΔW = -dL/dW exactly.

Plain (Eq. 12b)::

    M_ij = (2 k̊z_ij - γ k̊y_ij) k_ij / (σ² m²)

Grouped (Eq. 22, 47-48), one factor per group α::

    M_α,ij = (2 k̊z_ij - γ k̊y_ij) k_ij · 2(1-p) / (σ² m² g) · (v_αi - v_αj)

The fast update never forms M_α: it uses only A = (dL/dK) ⊙ K = σ² M (plain)
and the graph Laplacian of A, (L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j) (the backends'
``laplacian``).  A's diagonal stays out of L_A: it multiplies v_i - v_i = 0, and
kept in it would only add cancellation error (K ≈ I when all pairs are far apart).
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.objective import kernel_coefficient


def gaussian_weights(K, Ky, gamma):
    """A = (dL/dK) ⊙ K = (2 k̊z - γ k̊y) k / m², shape (m, m)."""
    return kernel_coefficient(K, Ky, gamma) * K


def third_factor_plain(K, Ky, gamma, sigma):
    """M (m, m) of Eq. 12b."""
    return gaussian_weights(K, Ky, gamma) / sigma ** 2


def third_factor_grouped(K, Ky, v, gamma, sigma, p, g, xp=np):
    """M (c, m, m) of Eq. 22 / 47: one third factor per group α."""
    A = gaussian_weights(K, Ky, gamma) * (2.0 * (1 - p) / (sigma ** 2 * g))
    dv = v.T[:, :, None] - v.T[:, None, :]          # (c, m, m): v_αi - v_αj
    return A[None, :, :] * dv
