"""Dropout after each hidden layer (App. D.1, D.4): inverted dropout, and alpha dropout with SELU.

Both are built on the backend primitive ``keep_select(rng, shape, p, dtype, pairs)``:
one draw (each unit dropped with probability p, independently) written as one
array per (on, off) pair, ``on`` where a unit is kept and ``off`` where it is
dropped: the scaled mask, or alpha dropout's two affine arrays, in one pass.
``keep_mask`` is the plain 0/1 mask of the same draw.

* On the host (numpy, numba) the mask comes from the numpy Generator ``rng``
  (:func:`host_keep`, written out by :func:`host_select`).
* On the GPU (cupy) only a 64-bit seed is drawn from ``rng``; the mask is made on
  the device by hashing (seed, unit index) with SplitMix64's output function
  (:func:`splitmix_keep` is its numpy reference), so no mask crosses the bus and
  nothing waits for the device.  A seeded run is still reproducible bit for bit
  (its whole random state is ``rng``), but its masks differ from the host's.
"""
from __future__ import annotations

import numpy as np

from threefactor.rule.activations import SELU_ALPHA, SELU_SCALE

#: Dropout probabilities up to this draw the dropped units' positions instead of one number per unit.
SPARSE_DROP_MAX = 0.02

#: SplitMix64: the increment of its state and the multipliers of its output function.
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: Bits of the hash compared with the drop threshold.
KEEP_BITS = 24


def _sparse_drops(rng, n, p):
    """Flat indices of the dropped units among n, for p ≤ :data:`SPARSE_DROP_MAX`: their number
    k ~ Binomial(n, p), then a uniformly random k-subset (see :func:`host_keep`)."""
    return rng.choice(n, size=rng.binomial(n, p), replace=False, shuffle=False)


def host_keep(rng, shape, p):
    """Boolean mask, each entry False (dropped) with probability p, independently (host array).

    For p ≤ :data:`SPARSE_DROP_MAX` (the paper's MLP uses 0.01) the number of
    dropped units k ~ Binomial(n, p) is drawn and then a uniformly random set
    of k positions: the same distribution as n independent Bernoulli(1 - p)
    keeps (they are uniform over k-subsets given their count), for ≈ n·p draws
    instead of n (0.07 ms instead of 0.5 ms for a 256 × 1024 layer).  Larger p
    draws one float32 per unit.  Both are deterministic given ``rng``.
    """
    n = int(np.prod(shape))
    if p <= SPARSE_DROP_MAX:
        keep = np.ones(n, dtype=bool)
        keep[_sparse_drops(rng, n, p)] = False
        return keep.reshape(shape)
    return rng.random(shape, dtype=np.float32) >= np.float32(p)


def host_select(rng, shape, p, dtype, pairs):
    """The host's ``keep_select``: :func:`host_keep`'s draw (the same random numbers, so the same
    units) written as one array of ``dtype`` per (on, off) pair, ``on`` where kept.

    For sparse drops the arrays are filled with ``on`` and the k dropped positions
    set to ``off`` (0.03 ms per 256 × 1024 array instead of 0.17 ms for a select
    over a boolean mask).
    """
    t = np.dtype(dtype).type
    n = int(np.prod(shape))
    if p <= SPARSE_DROP_MAX:
        drops = _sparse_drops(rng, n, p)
        outs = []
        for on, off in pairs:
            a = np.full(n, t(on), dtype=dtype)
            a[drops] = t(off)
            outs.append(a.reshape(shape))
        return tuple(outs)
    keep = host_keep(rng, shape, p)
    return tuple(np.where(keep, t(on), t(off)) for on, off in pairs)


def drop_threshold(p):
    """The integer t with P(hash's top :data:`KEEP_BITS` bits < t) = t / 2^24 = p to within 2^-24."""
    return int(np.ceil(p * (1 << KEEP_BITS)))


def splitmix_keep(seed, threshold, shape):
    """Reference of the device sampler: unit i (C order) is kept iff the top 24 bits of
    SplitMix64's output for state seed + (i + 1)·γ are ≥ ``threshold``.  Returns a bool array."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64) * np.uint64(GOLDEN_GAMMA))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(64 - KEEP_BITS) >= np.uint64(threshold)).reshape(shape)


def draw_seed(rng):
    """A 64-bit seed for the device sampler, from the numpy Generator ``rng`` (host only)."""
    return np.uint64(rng.integers(0, 1 << 63, dtype=np.int64))


def dropout_mask(backend, rng, shape, p, dtype=np.float32):
    """Inverted-dropout mask (an array of ``backend``): 0 with probability p, else 1/(1-p).

    Multiplying by it keeps the expected activity unchanged, as PyTorch's
    ``nn.Dropout`` does; at test time no mask is applied.  Returns None for p = 0.
    """
    if p <= 0:
        return None
    t = np.dtype(dtype).type
    return backend.keep_select(rng, shape, p, dtype, ((t(1.0 / (1.0 - p)), t(0.0)),))[0]


def alpha_dropout(backend, rng, shape, p, dtype=np.float32):
    """Alpha dropout for SELU (Klambauer et al. 2017): ``out = r · mult + add`` (arrays of ``backend``).

    Dropped units are set to SELU's saturation -λα, then the affine map a(·) + b
    restores zero mean and unit variance: a = ((1-p)(1 + p λ²α²))^(-1/2),
    mult = a · keep, add = a λα (p - 1 + keep).  Returns (None, None) for p = 0.
    """
    if p <= 0:
        return None, None
    sat, t = SELU_SCALE * SELU_ALPHA, np.dtype(dtype).type
    a = ((1.0 - p) * (1.0 + p * sat * sat)) ** -0.5
    q, s = t(1.0 - p), t(a * sat)
    # the values (keep - (1-p)) · aλα takes, each rounded in dtype as that expression would be
    return backend.keep_select(rng, shape, p, dtype, ((t(a), t(0.0)), ((t(1.0) - q) * s, (t(0.0) - q) * s)))
