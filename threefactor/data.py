"""Datasets: MNIST, Fashion-MNIST, Kuzushiji-MNIST and CIFAR-10.

The files are read with a small self-contained IDX parser (MNIST family,
gzip-compressed or raw) and a restricted unpickler (CIFAR-10 python
batches), checked for consistency, and pre-processed as in Pogodin & Latham
(2020), App. D.3:

* MNIST family: ``x / 255``, then ``(x - 0.5) / 0.5`` (values in [-1, 1]),
  flattened to ``(N, 784)`` by default or kept as ``(N, 1, 28, 28)``;
* CIFAR-10: ``x / 255``, then per channel ``(x - mean) / std`` with
  ``mean = (0.4914, 0.4822, 0.4465)`` and ``std = (0.247, 0.243, 0.261)``,
  shape ``(N, 3, 32, 32)``.

Images are float32, labels int64. Use :func:`load_dataset`; where the files
are looked for is described there. Locating and downloading the files lives
in :mod:`threefactor.data_download` (``cache_dir``, ``search_dirs`` and
``find_dataset`` are also reachable from here).
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
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

#: IDX file stems of the MNIST family (each may also carry a ``.gz`` suffix).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension

CIFAR_BATCH_DIR = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)

IMAGE_SHAPES = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "kmnist": (1, 28, 28), "cifar10": (3, 32, 32)}
N_CLASSES = 10


class DataError(ValueError):
    """A dataset file is missing, corrupt or inconsistent.

    The message always starts with the offending file (or directory) path.
    """


@dataclass(repr=False)
class Dataset:
    """A pre-processed train/test split.

    Attributes
    ----------
    name : str
        One of :data:`DATASETS`.
    x_train, y_train : numpy.ndarray
        Training images (float32) and labels (int64).
    x_test, y_test : numpy.ndarray
        Test images and labels, or the held-out validation part of the
        training set when loaded with ``validation=True``.
    n_classes : int
        Number of classes (10 for all datasets here).
    image_shape : tuple of int
        Shape ``(C, H, W)`` of one image, whether or not ``x`` is flattened.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, n_classes={self.n_classes}, "
            f"image_shape={self.image_shape})"
        )


# --------------------------------------------------------------------------- IDX


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    if raw[:2] != b"\x1f\x8b":  # not gzip (by content, whatever the suffix)
        if path.suffix == ".gz" and raw[:2] != b"\x00\x00":
            raise DataError(f"{path}: not a gzip file (bad gzip header)")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip stream: {exc}") from exc


def read_idx(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw).

    Parameters
    ----------
    path : str or path-like
        File to read. Gzip compression is detected from the content.
    kind : {"images", "labels"}
        Expected content: ``"images"`` requires magic 2051 (0x00000803,
        3-D), ``"labels"`` magic 2049 (0x00000801, 1-D).

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``(N, rows, cols)`` or ``(N,)``.

    Raises
    ------
    DataError
        If the file is unreadable, a corrupt gzip stream, has the wrong magic
        number, or its size disagrees with the dimensions in its header; the
        message names the file.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', not {kind!r}")
    path = Path(path)
    expected = IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, no IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected:
        raise DataError(f"{path}: expected magic {expected} ({kind}), found {magic}")
    ndim = expected & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, expected {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found < size:
        raise DataError(f"{path}: truncated: dimensions {dims} need {size} data bytes, found {found}")
    if found > size:
        raise DataError(f"{path}: size mismatch: dimensions {dims} need {size} data bytes, found {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_dir(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the four standard IDX files of an MNIST-family dataset.

    Parameters
    ----------
    directory : str or path-like
        Directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each raw or with a ``.gz`` suffix (the raw
        file is used when both exist).

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
        Raw uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``.

    Raises
    ------
    DataError
        If a file is missing or corrupt, images are not 28x28, a label is not
        in 0..9, or image and label counts disagree.
    """
    directory = Path(directory)
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _idx_path(directory, stem)
        if path is None:
            raise DataError(f"{directory / stem}: file not found (nor {stem}.gz)")
        kind = key.split("_")[1]
        arr = read_idx(path, kind)
        if kind == "images" and arr.shape[1:] != (28, 28):
            raise DataError(f"{path}: expected 28x28 images, found {arr.shape[1]}x{arr.shape[2]}")
        if kind == "labels" and arr.size and arr.max() >= N_CLASSES:
            raise DataError(f"{path}: label {int(arr.max())} out of range 0..{N_CLASSES - 1}")
        arrays[key] = (path, arr)
    for split in ("train", "test"):
        (pi, xi), (pl, yl) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(xi) != len(yl):
            raise DataError(f"{pi}: {len(xi)} images but {pl} has {len(yl)} labels")
    return tuple(arrays[k][1] for k in IDX_FILES)  # type: ignore[return-value]


# --------------------------------------------------------------------------- CIFAR


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except Exception as exc:  # truncated/corrupt pickles raise many types
        raise DataError(f"{path}: corrupt CIFAR-10 batch: {type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: missing key {'data' if 'data' not in batch else 'labels'!r}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' uint8 array (N, 3072), found {desc}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' are not integers: {exc}") from exc
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataError(f"{path}: labels out of range 0..{N_CLASSES - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_dir(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the CIFAR-10 python batches.

    Parameters
    ----------
    directory : str or path-like
        The ``cifar-10-batches-py`` directory (holding ``data_batch_1`` ..
        ``data_batch_5`` and ``test_batch``) or a directory containing it.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
        Raw uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)``.

    Raises
    ------
    DataError
        If a batch file is missing or corrupt; the message names the file.
    """
    directory = Path(directory)
    if directory.name != CIFAR_BATCH_DIR and (directory / CIFAR_BATCH_DIR).is_dir():
        directory = directory / CIFAR_BATCH_DIR
    train = [_load_cifar_batch(directory / f) for f in CIFAR_FILES[:-1]]
    x_test, y_test = _load_cifar_batch(directory / CIFAR_FILES[-1])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- preprocessing


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
) -> Dataset:
    """Load and pre-process a dataset, downloading it if needed.

    Parameters
    ----------
    name : {"mnist", "fmnist", "kmnist", "cifar10"}
        Dataset name.
    root : str or path-like, optional
        Data root searched first (``root/<name>``, then ``root``); downloads
        then go to ``root/<name>`` instead of the cache.
    flatten : bool, optional
        Flatten images to ``(N, C*H*W)``. Default: True for the MNIST family
        (``(N, 784)``), False for CIFAR-10 (``(N, 3, 32, 32)``).
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

    Returns
    -------
    Dataset
        float32 images, int64 labels.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists :data:`DATASETS`).
    DataError
        If the data are not found and ``download`` is False, the download
        fails, or a file is corrupt.

    Notes
    -----
    Directories searched, in order (see
    :func:`threefactor.data_download.search_dirs`): ``root/<name>`` and
    ``root`` (if given), ``$THREEFACTOR_DATA/<name>``, for Fashion-MNIST the
    Debian package directory ``/usr/share/datasets/fashion-mnist``, then the
    cache. The
    first directory holding every file is used. Checksums are verified when
    downloading, not for files found on disk (Debian re-compresses its
    copies), which are checked structurally instead.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    from . import data_download as dl

    directory = dl.find_dataset(name, root)
    if directory is None:
        if not download:
            looked = "; ".join(
                f"{d} (lacks {', '.join(dl._missing_files(name, d))})" if d.is_dir() else f"{d} (absent)"
                for d in dl.search_dirs(name, root)
            )
            raise DataError(f"{name}: dataset not found and download=False; looked in: {looked}")
        directory = Path(root) / name if root is not None else dl.cache_dir(name)
        dl.download_dataset(name, directory, progress=progress)
    if name == "cifar10":
        x_tr, y_tr, x_te, y_te = load_cifar10_dir(directory)
    else:
        x_tr, y_tr, x_te, y_te = load_mnist_dir(directory)
    if validation:
        x_tr, y_tr, x_te, y_te = split_validation(x_tr, y_tr, val_fraction, seed)
    if flatten is None:
        flatten = name != "cifar10"
    prep = preprocess_cifar10 if name == "cifar10" else preprocess_mnist
    return Dataset(
        name=name,
        x_train=prep(x_tr, flatten=flatten),
        y_train=y_tr.astype(np.int64),
        x_test=prep(x_te, flatten=flatten),
        y_test=y_te.astype(np.int64),
        n_classes=N_CLASSES,
        image_shape=IMAGE_SHAPES[name],
    )


def __getattr__(attr: str):
    # Lazy re-export of the location helpers (avoids a circular import).
    if attr in _LOCATION_NAMES:
        from . import data_download

        return getattr(data_download, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
