"""CIFAR-10 data augmentation (App. D.3): zero padding, random crop, horizontal flip.

The paper pads each raw training image with 4 zero pixels on every side
(32×32 -> 40×40), crops a random 32×32 window, flips it left-right with
probability 0.5, and only then normalises it per channel.  Our images are
already normalised, ``x = (raw/255 - mean) / std``, so a raw zero is
``-mean/std`` of its channel: :func:`pad_value` gives that fill, and
:func:`random_crop_flip` pads with it, which makes pad-then-normalise and
normalise-then-pad identical.

Every random number (crop offsets, flips) is drawn on the host from the run's
``numpy.random.Generator``, so a checkpointed generator state resumes the same
augmentations bit for bit; the gather itself runs in the array library of the
batch (numpy or cupy: one fancy-indexing pass, no Python loop over images).
"""
from __future__ import annotations

import numpy as np

from threefactor.data.datasets import CIFAR_MEAN, CIFAR_STD

#: Padding (pixels per side) of App. D.3.
PAD = 4


def pad_value(mean=CIFAR_MEAN, std=CIFAR_STD):
    """Per-channel value of a raw zero pixel after normalisation: ``-mean/std``, shape (C,)."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    if mean.shape != std.shape or mean.ndim != 1:
        raise ValueError(f"mean and std must be 1-d of the same length, got shapes {mean.shape}, {std.shape}")
    return -mean / std


def pad_fill(dataset):
    """Padding value(s) of a data set's normalised images: a raw zero pixel after its
    pre-processing (App. D.3): ``-mean/std`` per channel for cifar10, -1 for the MNISTs; what
    the dataset registered (:func:`threefactor.register_dataset`), 0 when it gave nothing."""
    from threefactor.data.registry import dataset_info
    fill = dataset_info(dataset).pad_fill
    return np.zeros(1) if fill is None else np.asarray(fill, dtype=np.float64)


def draw(rng, m, pad=PAD, flip_p=0.5):
    """The random part of one batch: (offsets (m, 2) ints in [0, 2·pad], flips (m,) bool).

    Draw order (fixed, for bit-for-bit resume): the m row offsets, the m column
    offsets, then the m flips.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    rows = rng.integers(0, 2 * pad + 1, size=m)
    cols = rng.integers(0, 2 * pad + 1, size=m)
    flips = rng.random(m) < flip_p
    return np.stack([rows, cols], axis=1), flips


def crop_flip(x, offsets, flips, pad=PAD, fill=0.0, xp=np):
    """Pad ``x`` by ``pad`` with ``fill``, crop each image at its offset, flip where asked.

    Parameters
    ----------
    x : array (m, C, H, W)   a batch of images (numpy or cupy)
    offsets : int array (m, 2)   top-left corner (row, col) of each crop in the padded image,
        in [0, 2·pad]; (pad, pad) is the un-shifted image
    flips : bool array (m,)   flip that image left-right (after cropping)
    fill : float or array (C,)   the padding value per channel
    xp : the array module of ``x``

    Returns
    -------
    array (m, C, H, W), a new array of ``x``'s dtype: ``out[i, c, r, s] =
    padded[i, c, oy_i + r, ox_i + s]`` and, for a flipped image, column s read
    from ``W - 1 - s``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (m, C, H, W), got shape {tuple(x.shape)}")
    m, c, h, w = x.shape
    offsets, flips = np.asarray(offsets), np.asarray(flips, dtype=bool)
    if offsets.shape != (m, 2) or flips.shape != (m,):
        raise ValueError(f"offsets must be ({m}, 2) and flips ({m},), got {offsets.shape}, {flips.shape}")
    if offsets.size and (offsets.min() < 0 or offsets.max() > 2 * pad):
        raise ValueError(f"offsets must lie in [0, {2 * pad}], got [{offsets.min()}, {offsets.max()}]")
    fill = np.broadcast_to(np.asarray(fill, dtype=np.float64), (c,))
    padded = xp.empty((m, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[...] = xp.asarray(fill.astype(x.dtype)).reshape(1, c, 1, 1)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = offsets[:, :1] + np.arange(h)                          # (m, H)
    cols = offsets[:, 1:] + np.arange(w)                          # (m, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    # one gather: image i, channel c, row rows[i, r], column cols[i, s]
    flat = (xp.asarray(np.arange(m)[:, None, None, None] * (c * padded.shape[2] * padded.shape[3])
                       + np.arange(c)[None, :, None, None] * (padded.shape[2] * padded.shape[3])
                       + rows[:, None, :, None] * padded.shape[3] + cols[:, None, None, :]))
    return padded.reshape(-1)[flat]


def random_crop_flip(x, rng, pad=PAD, fill=0.0, flip_p=0.5, xp=np):
    """App. D.3 on one batch: :func:`draw` from ``rng``, then :func:`crop_flip`.

    ``x`` (m, C, H, W) on any array library (``xp``); ``rng`` the run's numpy Generator.
    """
    offsets, flips = draw(rng, x.shape[0], pad, flip_p)
    return crop_flip(x, offsets, flips, pad, fill, xp)
