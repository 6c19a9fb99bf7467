"""Grouping of neurons and divisive normalisation (Eq. 17-21, 43-44).

A layer of n_out neurons is split into c contiguous groups of g = n_out / c
neurons.  Per sample i and group α::

    ẑ_αn = z_αn - mean_n z_αn                       (Eq. 17)
    u_α  = (δ + Σ_n ẑ²_αn) / g                      (Eq. 17)
    v_α  = u_α^(1-p) - mean_α u^(1-p)                (Eq. 18)
    r_αn = ẑ_αn / u_α^p                             (Eq. 21, divisive normalisation)

Reference implementations, written once against an array namespace ``xp``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GroupStats(NamedTuple):
    """Group statistics of one layer's activity.

    zhat : (m, n_out) group-centred activity ẑ
    u : (m, c) smoothed group variance
    v : (m, c) centred representation the kernel compares
    """

    zhat: object
    u: object
    v: object


def group_size(n_out, groups):
    """g = n_out / c, or a ValueError naming ``groups`` where c does not divide the layer."""
    if groups < 1 or n_out % groups:
        raise ValueError(f"groups={groups} does not divide the layer width n_out={n_out}")
    return n_out // groups


def group_stats(z, groups, p, delta, xp=np):
    """ẑ, u and v of Eq. 17-18 for activity ``z`` of shape (m, n_out).

    v (m, c) is what a grouped layer's kernel compares instead of z: the Gaussian kernel
    k(z_i, z_j) = exp(-‖v_i - v_j‖² / 2σ²) of Eq. 19 (the engine passes v to the backend's
    ``gaussian_kernel``, Eq. 26's form), the cosine kernel k = v_iᵀv_j / (‖v_i‖ ‖v_j‖) (App. D.4).
    """
    m, n = z.shape
    g = group_size(n, groups)
    zg = z.reshape(m, groups, g)
    zhat = zg - zg.mean(axis=2, keepdims=True)
    u = (delta + (zhat * zhat).sum(axis=2)) / g
    s = u ** (1 - p)
    v = s - s.mean(axis=1, keepdims=True)
    return GroupStats(zhat.reshape(m, n), u, v)


def divisive_norm(zhat, u, p, xp=np):
    """Divisively normalised activity r = ẑ / u^p (Eq. 21), shape (m, n_out)."""
    m, n = zhat.shape
    c = u.shape[1]
    return (zhat.reshape(m, c, n // c) / (u ** p)[:, :, None]).reshape(m, n)


def group_pullback(dv, zhat, u, p, xp=np):
    """Pull dL/dv (m, c) back to dL/dz (m, n_out) through Eq. 18 and 17 (Eq. 43-44).

    dL/dz_αn = 2(1-p)/g · (dv_α - mean_α dv) · ẑ_αn / u_α^p

    The factor ẑ_αn / u_α^p is Eq. 20's: through v the derivative of the kernel of Eq. 19 is
    dk(z_i, z_j)/dW_αnm ∝ -k (v_αi - v_αj)(ẑ_αn,i / u_αi^p · x_mi - ẑ_αn,j / u_αj^p · x_mj) / σ²,
    not Hebbian in z; passing r = ẑ/u^p on (:func:`divisive_norm`, Eq. 21) makes it Hebbian (Eq. 22).
    """
    m, n = zhat.shape
    c = u.shape[1]
    g = n // c
    dvc = dv - dv.mean(axis=1, keepdims=True)
    coef = (2.0 * (1 - p) / g) * dvc / u ** p
    return (zhat.reshape(m, c, g) * coef[:, :, None]).reshape(m, n)
