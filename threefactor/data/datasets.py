"""Datasets: MNIST, Fashion-MNIST, Kuzushiji-MNIST and CIFAR-10.

The files are read with a small self-contained IDX parser (MNIST family,
gzip-compressed or raw) and a restricted unpickler (CIFAR-10 python
batches), both in :mod:`threefactor.data.formats` and re-exported here,
checked for consistency, and pre-processed as in Pogodin & Latham
(2020), App. D.3:

* MNIST family: ``x / 255``, then ``(x - 0.5) / 0.5`` (values in [-1, 1]),
  flattened to ``(N, 784)`` by default or kept as ``(N, 1, 28, 28)``;
* CIFAR-10: ``x / 255``, then per channel ``(x - mean) / std`` with
  ``mean = (0.4914, 0.4822, 0.4465)`` and ``std = (0.247, 0.243, 0.261)``,
  shape ``(N, 3, 32, 32)``.

Images are float32, labels int64. Use :func:`load_dataset`; where the files
are looked for is described there. Locating and downloading the files lives
in :mod:`threefactor.data.download` (``cache_dir``, ``search_dirs`` and
``find_dataset`` are also reachable from here).
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from threefactor.data.formats import CIFAR_BATCH_DIR, CIFAR_FILES, IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, N_CLASSES, DataError, _idx_path, load_cifar10_dir, load_mnist_dir, read_idx
from threefactor.data.registry import dataset_info, register_dataset

__all__ = [
    "DATASETS",
    "BUNDLED_CHOICES",
    "BundledSampleWarning",
    "DataError",
    "Dataset",
    "load_dataset",
    "read_idx",
    "load_mnist_dir",
    "load_cifar10_dir",
    "preprocess_mnist",
    "preprocess_cifar10",
    "split_validation",
]

_LOCATION_NAMES = ("cache_dir", "search_dirs", "find_dataset")

DATASETS = ("mnist", "fmnist", "kmnist", "cifar10")

#: Values of :func:`load_dataset`'s ``bundled``.
BUNDLED_CHOICES = ("fallback", "never", "only")


class BundledSampleWarning(UserWarning):
    """:func:`load_dataset` found no full copy and returns the bundled sample instead."""

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)

IMAGE_SHAPES = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "kmnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@dataclass(repr=False)
class Dataset:
    """A pre-processed train/test split.

    Attributes
    ----------
    name : str
        A registered name (:func:`threefactor.dataset_names`) or the absolute path it was read from.
    x_train, y_train : numpy.ndarray
        Training images (float32) and labels (int64).
    x_test, y_test : numpy.ndarray
        Test images and labels, or the held-out validation part of the
        training set when loaded with ``validation=True``.
    n_classes : int
        Number of classes (10 for the built-in datasets).
    image_shape : tuple of int
        Shape ``(C, H, W)`` of one image, whether or not ``x`` is flattened.
    source : str or None
        The directory the files were read from (None when built by hand).
    bundled : bool
        True when these are the package's bundled sample (:mod:`threefactor.data.sample`),
        not a full copy of the dataset.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple
    source: str | None = None
    bundled: bool = False

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, n_classes={self.n_classes}, "
            f"image_shape={self.image_shape}{', bundled sample' if self.bundled else ''})"
        )




def preprocess_mnist(x: np.ndarray, flatten: bool = True) -> np.ndarray:
    """Scale MNIST-family images to [-1, 1]: ``(x / 255 - 0.5) / 0.5``.

    Parameters
    ----------
    x : numpy.ndarray
        uint8 images of shape ``(N, 28, 28)`` (or ``(N, 1, 28, 28)``).
    flatten : bool, default True
        Return ``(N, 784)`` if True, else ``(N, 1, 28, 28)``.

    Returns
    -------
    numpy.ndarray
        float32 array.
    """
    out = x.astype(np.float32) / np.float32(255.0)
    out -= np.float32(0.5)
    out /= np.float32(0.5)
    return out.reshape(len(x), -1) if flatten else out.reshape(len(x), 1, 28, 28)


def preprocess_cifar10(x: np.ndarray, flatten: bool = False) -> np.ndarray:
    """Normalise CIFAR-10 images per channel with :data:`CIFAR_MEAN`/:data:`CIFAR_STD`.

    Parameters
    ----------
    x : numpy.ndarray
        uint8 images of shape ``(N, 3, 32, 32)``.
    flatten : bool, default False
        Return ``(N, 3072)`` if True, else ``(N, 3, 32, 32)``.

    Returns
    -------
    numpy.ndarray
        float32 array ``(x / 255 - mean) / std``.
    """
    out = x.astype(np.float32) / np.float32(255.0)
    out -= np.asarray(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    out /= np.asarray(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return out.reshape(len(x), -1) if flatten else out


def split_validation(
    x: np.ndarray, y: np.ndarray, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off a deterministic random validation subset.

    Parameters
    ----------
    x, y : numpy.ndarray
        Samples and labels (same length).
    val_fraction : float, default 0.1
        Fraction of samples held out, in (0, 1); rounded, at least one sample
        on each side.
    seed : int, default 0
        Seed of the permutation; the same seed always gives the same split.

    Returns
    -------
    x_train, y_train, x_val, y_val : numpy.ndarray
        The two disjoint parts, each in the original sample order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(x)
    if n < 2 or len(y) != n:
        raise ValueError(f"need at least 2 samples with as many labels, got {n} and {len(y)}")
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    flatten: bool | None = None,
    validation: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
    progress: bool = True,
    bundled: str = "fallback",
) -> Dataset:
    """Load and pre-process a dataset, downloading it if needed.

    Parameters
    ----------
    name : str or path-like
        A registered dataset (``"mnist"``, ``"fmnist"``, ``"kmnist"``, ``"cifar10"`` or one
        added with :func:`threefactor.register_dataset`; any case), or a path: a folder of
        IDX files, a folder of CIFAR-10 batches, or an ``.npz`` file with ``x_train``,
        ``y_train``, ``x_test``, ``y_test`` (:mod:`threefactor.data.paths`).
    root : str or path-like, optional
        Data root searched first (``root/<name>``, then ``root``); downloads
        then go to ``root/<name>`` instead of the cache.
    flatten : bool, optional
        Flatten images to ``(N, C*H*W)``. Default: the dataset's (True for the MNIST family,
        ``(N, 784)``, and for paths; False for CIFAR-10, ``(N, 3, 32, 32)``).
    validation : bool, default False
        If True, train on a ``1 - val_fraction`` part of the training set and
        return the held-out part as ``x_test``/``y_test``.
    val_fraction : float, default 0.1
        Held-out fraction when ``validation`` is True.
    seed : int, default 0
        Seed of the validation split.
    download : bool, default True
        Download missing data (with checksum verification) into the cache,
        ``$XDG_CACHE_HOME/threefactor/<name>`` (default ``~/.cache/...``).
    progress : bool, default True
        Show download progress bars.
    bundled : {"fallback", "never", "only"}, default "fallback"
        The package's bundled sample of Fashion-MNIST (10,000 training and 2,000 test images,
        :mod:`threefactor.data.sample`): ``"fallback"`` uses it, with a
        :class:`BundledSampleWarning`, when no full copy is found on disk and no ``root`` is
        given (nothing is downloaded then); ``"never"`` never uses it; ``"only"`` always does.
        Datasets without a sample ignore ``"fallback"``.

    Returns
    -------
    Dataset
        float32 images, int64 labels; ``bundled`` says whether it is the sample.

    Raises
    ------
    ValueError
        If ``name`` is neither a registered dataset nor a path (the message gives the
        nearest names), or ``bundled="only"`` names a dataset without a sample.
    DataError
        If the data are not found and ``download`` is False or the download fails (the
        message says where it looked and how to provide the files; no empty folder is left),
        or a file is corrupt (a bundled file whose checksum differs included).

    Notes
    -----
    Directories searched, in order (see
    :func:`threefactor.data.download.search_dirs`): ``root/<name>`` and
    ``root`` (if given), ``$THREEFACTOR_DATA/<name>``, for Fashion-MNIST the
    Debian package directory ``/usr/share/datasets/fashion-mnist``, then the
    cache. The first directory holding every file is used; when there is none,
    Fashion-MNIST without ``root`` falls back to the bundled sample (see
    ``bundled``), the others are downloaded into ``root/<name>`` or the cache.
    Checksums are verified when downloading and for the bundled sample, not for
    files found on disk (Debian re-compresses its copies), which are checked
    structurally instead.
    """
    if bundled not in BUNDLED_CHOICES:
        raise ValueError(f"bundled must be one of {', '.join(map(repr, BUNDLED_CHOICES))}, got {bundled!r}")
    info = dataset_info(name)
    from threefactor.data import sample
    if bundled == "only" and info.name not in sample.SAMPLE_DATASETS:
        raise ValueError(f"bundled='only': there is no bundled sample of {info.name!r} "
                         f"(samples: {', '.join(sample.SAMPLE_DATASETS)})")
    kwargs = dict(root=root, download=download, progress=progress)
    if "bundled" in inspect.signature(info.load).parameters:
        kwargs["bundled"] = bundled
    x_tr, y_tr, x_te, y_te, *source = info.load(**kwargs)
    is_sample = bool(source) and Path(source[0]).resolve() == sample.SAMPLE_DIR.resolve()
    if validation:
        x_tr, y_tr, x_te, y_te = split_validation(x_tr, y_tr, val_fraction, seed)
    if flatten is None:
        flatten = info.flatten
    shape = lambda x: x.reshape(len(x), -1) if flatten else x.reshape((len(x),) + info.image_shape)
    return Dataset(
        name=info.name,
        x_train=shape(np.asarray(x_tr, dtype=np.float32)),
        y_train=np.asarray(y_tr).astype(np.int64),
        x_test=shape(np.asarray(x_te, dtype=np.float32)),
        y_test=np.asarray(y_te).astype(np.int64),
        n_classes=info.n_classes,
        image_shape=info.image_shape,
        source=str(source[0]) if source else None,
        bundled=is_sample,
    )


def _find_or_download(name, root, download, progress, bundled="fallback"):
    """The folder holding a built-in dataset's files: searched, else (Fashion-MNIST without ``root``)
    the bundled sample, else downloaded."""
    from threefactor.data import download as dl
    from threefactor.data import sample

    if bundled == "only":
        return sample.sample_dir(name)
    directory = dl.find_dataset(name, root)
    if directory is None and bundled == "fallback" and root is None and name in sample.SAMPLE_DATASETS:
        warnings.warn(sample.SAMPLE_NOTE, BundledSampleWarning, stacklevel=2)
        return sample.sample_dir(name)
    if directory is None:
        target = Path(root) / name if root is not None else dl.cache_dir(name)
        if not download:
            raise DataError(dl.not_found_message(name, root, target, "download=False"))
        try:
            dl.download_dataset(name, target, progress=progress)
        except DataError as exc:
            raise type(exc)(dl.not_found_message(name, root, target, f"downloading it failed: {exc}")) from exc
        directory = target
    return directory


def _mnist_family(name):
    def load(root=None, download=True, progress=True, bundled="fallback"):
        directory = _find_or_download(name, root, download, progress, bundled)
        x_tr, y_tr, x_te, y_te = load_mnist_dir(directory)
        return preprocess_mnist(x_tr, flatten=False), y_tr, preprocess_mnist(x_te, flatten=False), y_te, directory
    load.__name__ = f"load_{name}"
    load.__doc__ = f"{name}: IDX files, pre-processed as App. D.3 ((x/255 - 0.5)/0.5), (N, 1, 28, 28)."
    return load


for _name, _title in (("mnist", "MNIST"), ("fmnist", "fashion-MNIST"), ("kmnist", "Kuzushiji-MNIST")):
    register_dataset(_name, image_shape=(1, 28, 28), n_classes=N_CLASSES, title=_title, pad_fill=(-1.0,),
                     aliases={"fmnist": ("fashion-mnist", "fashion_mnist"),
                              "kmnist": ("kuzushiji-mnist",)}.get(_name, ()))(_mnist_family(_name))


@register_dataset("cifar10", image_shape=(3, 32, 32), n_classes=N_CLASSES, title="CIFAR10", aliases=("cifar-10",),
                  flatten=False, pad_fill=tuple(-np.asarray(CIFAR_MEAN) / np.asarray(CIFAR_STD)), augment=True)
def load_cifar10(root=None, download=True, progress=True):
    """CIFAR-10: python batches, normalised per channel (App. D.3), (N, 3, 32, 32)."""
    directory = _find_or_download("cifar10", root, download, progress)
    x_tr, y_tr, x_te, y_te = load_cifar10_dir(directory)
    return preprocess_cifar10(x_tr), y_tr, preprocess_cifar10(x_te), y_te, directory


def __getattr__(attr: str):
    # Lazy re-export of the location helpers (avoids a circular import).
    if attr in _LOCATION_NAMES:
        from threefactor.data import download as data_download

        return getattr(data_download, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
