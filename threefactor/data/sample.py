"""The bundled sample of Fashion-MNIST: what a fresh machine trains on when no full copy is found.

The package ships 12,000 real Fashion-MNIST images (Xiao, Rasul & Vollgraf 2017; MIT licence,
``fmnist_sample/LICENSE``) in the dataset's own IDX format, gzip-compressed, about 5.2 MB:

* training: the first 1,000 images of each class of ``train-images-idx3-ubyte`` (10,000 images,
  taken from its first 10,648, kept in file order);
* test: the first 200 images of each class of ``t10k-images-idx3-ubyte`` (2,000 images, kept in
  file order).

:func:`make_sample` writes exactly these files from a full copy (``python -m
threefactor.data.sample /usr/share/datasets/fashion-mnist OUT``); their SHA-256 checksums are
:data:`SAMPLE_CHECKSUMS`, checked every time the sample is loaded (:func:`verify_sample`), so a
damaged installation is a clear error rather than silently different data.

:func:`threefactor.data.load_dataset` uses the sample only where no full copy is found
(``bundled="fallback"``, its default) and says so in :data:`SAMPLE_NOTE`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from threefactor.data.formats import IDX_FILES, DataError, read_idx

__all__ = ["SAMPLE_DATASETS", "SAMPLE_DIR", "SAMPLE_CHECKSUMS", "SAMPLE_PER_CLASS", "SAMPLE_NOTE",
           "BUNDLED", "sample_dir", "verify_sample", "make_sample", "select_sample"]

#: Datasets with a bundled sample.
SAMPLE_DATASETS = ("fmnist",)

#: The package folder holding the Fashion-MNIST sample.
SAMPLE_DIR = Path(__file__).resolve().parent / "fmnist_sample"

#: Images per class taken from each split: (training, test).
SAMPLE_PER_CLASS = {"train": 1000, "test": 200}

#: What ``config.json`` (key ``"data"``) and :attr:`Dataset.data` say for the sample.
BUNDLED = "bundled-sample"

#: SHA-256 of each bundled file (checked on every load).
SAMPLE_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "fb5d76be9a26fa809a3b13c18f7191e33c2115c6e377baf29656711358a51b1d",
    "train-labels-idx1-ubyte.gz": "4cc57b2814542612de157ac954fec39e17b40ac7cc646602198dc0f4c7c97fc9",
    "t10k-images-idx3-ubyte.gz": "f63b5f3a005caedab708d16a900babd905c8331b1cd2188b91245c032cfe6acd",
    "t10k-labels-idx1-ubyte.gz": "09f5dc909c8586184bae0fbde44202a1b007bf6f2bd2bc952652fa22dc323f95",
}

#: The one line said when the sample stands in for the full set.
SAMPLE_NOTE = ("using the bundled 10k sample of Fashion-MNIST (10,000 training, 2,000 test images); for the "
               "full set: apt-get install dataset-fashion-mnist, $THREEFACTOR_DATA or --data-root")


def sample_dir(name: str) -> Path:
    """The folder of dataset ``name``'s bundled sample, its files checked (:func:`verify_sample`).

    Raises
    ------
    ValueError
        If ``name`` has no bundled sample (only :data:`SAMPLE_DATASETS` do).
    DataError
        If a bundled file is missing or its checksum differs (a damaged installation).
    """
    if name not in SAMPLE_DATASETS:
        raise ValueError(f"no bundled sample of {name!r}; only of: {', '.join(SAMPLE_DATASETS)}")
    verify_sample(SAMPLE_DIR)
    return SAMPLE_DIR


def verify_sample(directory: str | os.PathLike = SAMPLE_DIR) -> None:
    """Check every bundled file against :data:`SAMPLE_CHECKSUMS`; DataError naming the first bad one."""
    directory = Path(directory)
    for filename, expected in SAMPLE_CHECKSUMS.items():
        path = directory / filename
        try:
            found = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DataError(f"{path}: the bundled Fashion-MNIST sample cannot be read ({exc.strerror or exc}); "
                            f"reinstall threefactor, or use the full set (apt-get install "
                            f"dataset-fashion-mnist, $THREEFACTOR_DATA or --data-root)") from None
        if found != expected:
            raise DataError(f"{path}: the bundled Fashion-MNIST sample is corrupt (sha256 {found}, expected "
                            f"{expected}); reinstall threefactor, or use the full set (apt-get install "
                            f"dataset-fashion-mnist, $THREEFACTOR_DATA or --data-root)")


def select_sample(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class 0..9, in file order.

    ValueError if a class has fewer than ``per_class`` samples.
    """
    labels = np.asarray(labels)
    picks = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than {per_class}")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = 0x803 if arr.ndim == 3 else 0x801
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def make_sample(source: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write the sample's four files from a full Fashion-MNIST copy in ``source`` into ``out``.

    gzip level 9 with no timestamp or name, so that the bytes depend only on the images (and zlib).
    Returns ``{filename: sha256}`` of the files written.
    """
    source, out = Path(source), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, per_class in SAMPLE_PER_CLASS.items():
        images = read_idx(_find(source, IDX_FILES[f"{split}_images"]), "images")
        labels = read_idx(_find(source, IDX_FILES[f"{split}_labels"]), "labels")
        keep = select_sample(labels, per_class)
        for kind, arr in (("images", images[keep]), ("labels", labels[keep])):
            filename = IDX_FILES[f"{split}_{kind}"] + ".gz"
            data = gzip.compress(_idx_bytes(arr), compresslevel=9, mtime=0)
            (out / filename).write_bytes(data)
            sums[filename] = hashlib.sha256(data).hexdigest()
    return sums


def _find(directory: Path, stem: str) -> Path:
    for path in (directory / stem, directory / (stem + ".gz")):
        if path.is_file():
            return path
    raise DataError(f"{directory / stem}: file not found (nor {stem}.gz)")


if __name__ == "__main__":  # pragma: no cover - the maintainers' tool
    if len(sys.argv) != 3:
        sys.exit("usage: python -m threefactor.data.sample FULL_FMNIST_DIR OUT_DIR")
    for name, digest in make_sample(sys.argv[1], sys.argv[2]).items():
        print(f"{name}: {digest}")
