"""The pHSIC estimator and the layer-local objective (Eq. 9, 34, 39-40).

    pHSIC(A, B) = mean(K_A ⊙ K_B) - mean(K_A) · mean(K_B)            (Eq. 34)
    L           = pHSIC(Z, Z) - γ pHSIC(Y, Z)                         (Eq. 9)
    dL/dK_ij    = (2 k̊z_ij - γ k̊y_ij) / m²                            (Eq. 40)

where k̊ is a kernel matrix minus the mean of all its m² entries (Eq. 11).
"""
from __future__ import annotations


def layer_objective(K, Ky, gamma):
    """L = pHSIC(Z, Z) - γ pHSIC(Y, Z) (Eq. 9) from the two kernel matrices.

    Computed as mean(K ⊙ (K - γ Ky)) - K̄ (K̄ - γ K̄y), the same sum as two
    pHSIC terms (Eq. 34; their literal double sums: :func:`threefactor.verify.naive.phsic`) regrouped: one dot product and two means instead of two
    products and six means (training logs it every step).
    """
    kbar = K.mean()
    d = K - gamma * Ky
    return (K.ravel() @ d.ravel()) / K.size - kbar * (kbar - gamma * Ky.mean())


def kernel_coefficient(K, Ky, gamma):
    """C = dL/dK = (2 k̊z - γ k̊y) / m², shape (m, m) (Eq. 40)."""
    m2 = K.shape[0] * K.shape[1]
    return (2.0 * (K - K.mean()) - gamma * (Ky - Ky.mean())) / m2
