"""Datasets named by their path: a folder of IDX files, a folder of CIFAR-10 batches, an ``.npz`` file.

* a folder holding the four MNIST IDX files (``train-images-idx3-ubyte`` ...,
  gzip-compressed or raw): pre-processed as the MNIST family, ``(x/255 - 0.5)/0.5``;
* a folder of CIFAR-10 python batches (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``, or a folder holding ``cifar-10-batches-py``): pre-processed as CIFAR-10;
* an ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``: images
  ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``, uint8 (scaled to [-1, 1] as the MNIST
  family) or floating point (used as they are); labels integers ``0 .. n_classes-1``
  (n_classes = the largest label + 1, at least 2).

Everything read is checked; a :class:`~threefactor.data.formats.DataError` names the file and
what was expected.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from threefactor.data.formats import (CIFAR_BATCH_DIR, CIFAR_FILES, IDX_FILES, DataError, _idx_path,
                                      load_cifar10_dir, load_mnist_dir)
from threefactor.data.registry import DatasetInfo, set_path_reader

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_CACHE = {}         # (path, mtime) -> (info, arrays): a path is read once per version


def path_info(path) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset path (read and checked once; later calls reuse it)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected a dataset name, a folder of IDX files or "
                        f"CIFAR-10 batches, or an .npz file with {', '.join(NPZ_KEYS)})")
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _read(path)
    info, arrays = _CACHE[key]
    return info


def _read(path):
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: a dataset file must be an .npz with {', '.join(NPZ_KEYS)}")
        arrays = _checked_npz(path)
        x = arrays[0]
        shape = (1, 1, x.shape[1]) if x.ndim == 2 else (1, *x.shape[1:]) if x.ndim == 3 else x.shape[1:]
        n_classes = int(max(arrays[1].max(), arrays[3].max())) + 1
        fill = (-1.0,) * shape[0] if arrays[4] else None
        arrays = arrays[:4]
    elif _is_idx_dir(path):
        from threefactor.data.datasets import preprocess_mnist
        x_tr, y_tr, x_te, y_te = load_mnist_dir(path)
        arrays = (preprocess_mnist(x_tr, flatten=False), y_tr.astype(np.int64),
                  preprocess_mnist(x_te, flatten=False), y_te.astype(np.int64))
        shape, n_classes, fill = (1, 28, 28), 10, (-1.0,)
    elif _is_cifar_dir(path):
        from threefactor.data.augment import pad_value
        from threefactor.data.datasets import preprocess_cifar10
        x_tr, y_tr, x_te, y_te = load_cifar10_dir(path)
        arrays = (preprocess_cifar10(x_tr), y_tr.astype(np.int64), preprocess_cifar10(x_te), y_te.astype(np.int64))
        shape, n_classes, fill = (3, 32, 32), 10, tuple(pad_value())
    else:
        raise DataError(f"{path}: holds no dataset: expected the four IDX files ({', '.join(IDX_FILES.values())}, "
                        f"optionally .gz), the CIFAR-10 batches ({', '.join(CIFAR_FILES)}), or an .npz file")
    source = str(path)

    def load(root=None, download=True, progress=True):
        return (*arrays, source)
    info = DatasetInfo(str(path), load, tuple(int(s) for s in shape), n_classes,
                       path.stem if path.is_file() else path.name, flatten=True, pad_fill=fill, is_path=True)
    return info, arrays


def _is_idx_dir(path):
    return path.is_dir() and all(_idx_path(path, stem) is not None for stem in IDX_FILES.values())


def _is_cifar_dir(path):
    folder = path / CIFAR_BATCH_DIR if (path / CIFAR_BATCH_DIR).is_dir() else path
    return path.is_dir() and any((folder / f).is_file() for f in CIFAR_FILES)


def _checked_npz(path):
    """(x_train, y_train, x_test, y_test, scaled) of an .npz file, checked: keys, dtypes, shapes, labels."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: lacks {', '.join(missing)} (an .npz dataset holds {', '.join(NPZ_KEYS)}; "
                                f"found {', '.join(npz.files) or 'nothing'})")
            x_tr, y_tr, x_te, y_te = (npz[k] for k in NPZ_KEYS)
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for name, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind not in "uif" or x.dtype == np.bool_:
            raise DataError(f"{path}: {name} must hold numbers (uint8 pixels or floats), got dtype {x.dtype}")
        if x.ndim not in (2, 3, 4):
            raise DataError(f"{path}: {name} must be (N, D), (N, H, W) or (N, C, H, W), got shape {x.shape}")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise DataError(f"{path}: {name} holds NaN or Inf")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{path}: x_train's samples are {x_tr.shape[1:]} but x_test's are {x_te.shape[1:]}")
    for name, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.dtype.kind not in "iu":
            raise DataError(f"{path}: {name} must hold integer class labels, got dtype {y.dtype}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: {name} must be 1-d with one label per sample ({len(x)}), got shape {y.shape}")
        if len(y) < 1:
            raise DataError(f"{path}: {name} is empty")
        if y.min() < 0:
            raise DataError(f"{path}: {name} holds label {int(y.min())}; labels must be 0 .. n_classes-1")
    if len(y_tr) < 2:
        raise DataError(f"{path}: x_train needs at least 2 samples, got {len(y_tr)}")
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    if n_classes < 2:
        raise DataError(f"{path}: the labels name only one class (0); a classifier needs at least 2")
    if np.unique(y_tr).size < 2:
        raise DataError(f"{path}: y_train must hold at least 2 classes, got only {np.unique(y_tr).tolist()}")
    scaled = x_tr.dtype == np.uint8
    prep = ((lambda x: (x.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5))
            if scaled else (lambda x: np.asarray(x, dtype=np.float32)))
    return (prep(x_tr), y_tr.astype(np.int64), prep(x_te), y_te.astype(np.int64), scaled)


set_path_reader(path_info)
