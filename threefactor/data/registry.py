"""The dataset registry: name -> loader, image shape, classes, title; and datasets by path.

A dataset is one function registered with :func:`register_dataset`, the built-ins
(:mod:`threefactor.data.datasets`) the same way::

    @register_dataset("blobs", image_shape=(1, 4, 4), n_classes=3, title="Blobs")
    def blobs(root=None, download=True, progress=True):
        ...                                    # any way of getting the arrays
        return x_train, y_train, x_test, y_test

The loader returns pre-processed images ``(N, C, H, W)`` (or ``(N, C*H*W)``) and integer
labels in ``0 .. n_classes-1`` (optionally a fifth item, the folder they came from).
The name then works everywhere a dataset is named: ``load_dataset("blobs")``,
``threefactor train --dataset blobs``, ``config.json``, ``threefactor table``.

A dataset can also be named by its path (:mod:`threefactor.data.paths`): a folder of IDX
files (MNIST layout), a folder of CIFAR-10 python batches, or an ``.npz`` file holding
``x_train``, ``y_train``, ``x_test``, ``y_test``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from threefactor.names import Vocabulary

DATASET_NAMES = Vocabulary("dataset", hint="registered datasets: threefactor.dataset_names(); or a path to a "
                                           "folder of IDX files, of CIFAR-10 batches, or an .npz file",
                           also="a path to a folder of IDX files, of CIFAR-10 batches, or an .npz file")
_REGISTRY = {}


@dataclass(frozen=True)
class DatasetInfo:
    """What threefactor knows of a dataset before loading it.

    Attributes
    ----------
    name : str
        Canonical name (for a dataset given by path: the absolute path).
    load : callable
        ``load(root=None, download=True, progress=True)`` -> ``(x_train, y_train, x_test, y_test[, source])``.
    image_shape : tuple of int
        ``(C, H, W)`` of one image.
    n_classes : int
    title : str
        Its name in tables (``threefactor table``).
    flatten : bool
        Whether :func:`threefactor.load_dataset` flattens images by default.
    pad_fill : tuple of float or None
        Value(s) of a raw zero pixel after pre-processing, per channel: what augmentation
        pads with (App. D.3); None pads with 0.
    augment : bool
        Whether training augments it by default (crop and flip, App. D.3).
    """

    name: str
    load: Callable
    image_shape: tuple
    n_classes: int
    title: str
    flatten: bool = True
    pad_fill: Optional[tuple] = None
    augment: bool = False
    is_path: bool = field(default=False, compare=False)


def register_dataset(name, *, image_shape, n_classes=10, title=None, aliases=(), flatten=True, pad_fill=None,
                     augment=False):
    """Function decorator: register a dataset loader under ``name`` (and ``aliases``), case-insensitive.

    Parameters
    ----------
    name : str
    image_shape : (C, H, W)
    n_classes : int >= 2
    title : str, optional (default ``name``)
    aliases : other accepted spellings
    flatten : bool
        :func:`threefactor.load_dataset` flattens images by default.
    pad_fill : sequence of float, optional
        Per-channel value of a zero pixel after pre-processing (augmentation pads with it).
    augment : bool
        Training crops and flips its images by default (``--augment`` overrides).
    """
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"register_dataset({name!r}): image_shape must be (C, H, W), got {image_shape!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"register_dataset({name!r}): n_classes must be an integer >= 2, got {n_classes!r}")

    def register(load):
        canonical = str(name).lower()
        if canonical in _REGISTRY:
            DATASET_NAMES.remove(canonical)
        DATASET_NAMES.add(canonical, tuple(a.lower() for a in aliases))
        _REGISTRY[canonical] = DatasetInfo(canonical, load, shape, n_classes, title or name, bool(flatten),
                                           None if pad_fill is None else tuple(map(float, pad_fill)),
                                           bool(augment))
        return load
    return register


#: reads a dataset given by path (set by :mod:`threefactor.data.paths` when it is imported)
_PATH_READER: Optional[Callable] = None


def set_path_reader(reader):
    """Install the function that turns a dataset path into a :class:`DatasetInfo`."""
    global _PATH_READER
    _PATH_READER = reader



def dataset_names():
    """The registered datasets' canonical names (built-ins first)."""
    return DATASET_NAMES.names


def looks_like_path(text) -> bool:
    """Whether a dataset argument is meant as a path (it has a folder separator, ends in .npz, or exists)."""
    text = os.fspath(text)
    return (os.sep in text or (os.altsep or os.sep) in text or text.lower().endswith(".npz")
            or os.path.exists(text))


def canonical_dataset(name, argument="dataset"):
    """A registered dataset's canonical name (any case, alias), or a path made absolute.

    ValueError naming ``argument`` with the nearest names when it is neither."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a dataset name or a path, got {type(name).__name__}")
    canonical = DATASET_NAMES.get(os.fspath(name))
    if canonical is not None:
        return canonical
    if looks_like_path(name):
        return os.path.abspath(os.fspath(name))
    raise DATASET_NAMES.unknown(name, argument)


def dataset_info(name, argument="dataset") -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered name or of a path (read to learn its shape).

    A path that is missing or holds no dataset is a :class:`~threefactor.data.formats.DataError`
    naming it and what was expected."""
    canonical = canonical_dataset(name, argument)
    if canonical in _REGISTRY:
        return _REGISTRY[canonical]
    return _PATH_READER(canonical)


def dataset_title(name) -> str:
    """A dataset's title in tables: the registered title, or a path's file or folder name."""
    try:
        canonical = canonical_dataset(name)
    except (ValueError, TypeError):
        return str(name)
    info = _REGISTRY.get(canonical)
    return info.title if info is not None else os.path.basename(canonical.rstrip(os.sep)) or canonical


def dataset_slug(name) -> str:
    """A dataset's short name for run directories and preset names: its canonical name, or a path's
    file name without its extension."""
    canonical = canonical_dataset(name)
    if canonical in _REGISTRY:
        return canonical
    base = os.path.basename(canonical.rstrip(os.sep))
    return os.path.splitext(base)[0] or "data"
