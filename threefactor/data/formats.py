"""Dataset file formats: the IDX files of the MNIST family and the CIFAR-10 python batches.

A small self-contained IDX parser (gzip-compressed or raw files) and a restricted
unpickler that rebuilds numpy arrays only (CIFAR-10 batches), each checking what it
reads and raising :class:`DataError` that names the file.  Pre-processing and
:func:`threefactor.data.load_dataset` live in :mod:`threefactor.data`, which
re-exports everything here.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path

import numpy as np


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

N_CLASSES = 10


class DataError(ValueError):
    """A dataset file is missing, corrupt or inconsistent.

    The message always starts with the offending file (or directory) path.
    """



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
        if len(arr) == 0:
            raise DataError(f"{path}: holds 0 {kind} (its header says N = 0); expected a non-empty "
                            f"{key.replace('_', ' ')} file")
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
    if len(data) == 0:
        raise DataError(f"{path}: holds 0 images; expected a non-empty CIFAR-10 batch")
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
