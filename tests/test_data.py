"""Tests of threefactor.data and threefactor.data.download (small synthetic files)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from threefactor.data import datasets as data
from threefactor.data import download as data_download
from real_data import FULL_FMNIST, SKIP_REASON
from threefactor.data.datasets import DATASETS, DataError, Dataset, load_dataset

STEMS = list(data.IDX_FILES.values())


# --------------------------------------------------------------------------- helpers


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def write_file(path: Path, content: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def make_images(n: int, offset: int = 0) -> np.ndarray:
    """uint8 images whose first two pixels encode the sample index."""
    rng = np.random.default_rng(n + offset)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    idx = np.arange(offset, offset + n)
    x[:, 0, 0], x[:, 0, 1] = idx % 256, idx // 256
    return x


def make_mnist_dir(directory: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": make_images(n_train),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": make_images(n_test, offset=1000),
        "test_labels": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for key, stem in data.IDX_FILES.items():
        arr = arrays[key]
        magic = data.IDX_IMAGES_MAGIC if key.endswith("images") else data.IDX_LABELS_MAGIC
        write_file(directory / stem, idx_bytes(magic, arr.shape, arr.tobytes()), gz)
    return arrays


def sample_ids(x: np.ndarray) -> np.ndarray:
    """Recover the sample index encoded by make_images from pre-processed images."""
    pix = np.rint((x.reshape(len(x), -1)[:, :2] + 1.0) * 127.5).astype(np.int64)
    return pix[:, 0] + 256 * pix[:, 1]


def make_cifar_dir(directory: Path, n_per_batch: int = 4) -> dict:
    batch_dir = directory / data.CIFAR_BATCH_DIR
    batch_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for name in data.CIFAR_FILES:
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        with open(batch_dir / name, "wb") as f:
            pickle.dump({b"batch_label": b"synthetic", b"data": x, b"labels": y}, f, protocol=2)
        out[name] = (x, y)
    return out


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep tests away from the real data locations and caches."""
    monkeypatch.delenv("THREEFACTOR_DATA", raising=False)
    monkeypatch.delenv("THREEFACTOR_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data_download, "SYSTEM_DIRS", {})


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (base_url, served_dir, request_paths)."""
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- IDX parsing


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    x = make_images(7)
    path = write_file(tmp_path / "imgs", idx_bytes(0x803, x.shape, x.tobytes()), gz)
    got = data.read_idx(path, "images")
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, x)
    y = np.arange(7, dtype=np.uint8)
    path = write_file(tmp_path / "labels", idx_bytes(0x801, y.shape, y.tobytes()), gz)
    np.testing.assert_array_equal(data.read_idx(path, "labels"), y)


def test_read_idx_gz_name_with_raw_content(tmp_path):
    # Some HTTP clients transparently decompress: accept raw IDX under a .gz name.
    y = np.arange(5, dtype=np.uint8)
    path = tmp_path / "labels.gz"
    path.write_bytes(idx_bytes(0x801, y.shape, y.tobytes()))
    np.testing.assert_array_equal(data.read_idx(path, "labels"), y)


def test_read_idx_rejects_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        data.read_idx(tmp_path / "x", "pixels")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_data_raises(tmp_path, gz):
    x = make_images(3)
    content = idx_bytes(0x803, x.shape, x.tobytes())[:-10]
    path = write_file(tmp_path / "train-images-idx3-ubyte", content, gz)
    with pytest.raises(DataError, match="truncated") as exc:
        data.read_idx(path, "images")
    assert str(path) in str(exc.value)


def test_truncated_header_raises(tmp_path):
    path = write_file(tmp_path / "t10k-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00", False)
    with pytest.raises(DataError, match="truncated") as exc:
        data.read_idx(path, "images")
    assert str(path) in str(exc.value)
    path.write_bytes(b"\x00")
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path, "images")


def test_trailing_bytes_raise(tmp_path):
    y = np.arange(4, dtype=np.uint8)
    path = write_file(tmp_path / "labels", idx_bytes(0x801, y.shape, y.tobytes() + b"xx"), True)
    with pytest.raises(DataError, match="size mismatch") as exc:
        data.read_idx(path, "labels")
    assert str(path) in str(exc.value)


def test_wrong_magic_message(tmp_path):
    y = np.arange(4, dtype=np.uint8)
    path = write_file(tmp_path / "train-images-idx3-ubyte", idx_bytes(0x801, y.shape, y.tobytes()), True)
    with pytest.raises(DataError) as exc:
        data.read_idx(path, "images")
    assert str(exc.value) == f"{path}: expected magic 2051 (images), found 2049"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: len(b) // 2],  # stream cut short
        lambda b: b[:10] + bytes(len(b) - 10),  # deflate data zeroed
        lambda b: b[:-8] + bytes(8),  # CRC/length trailer corrupted
    ],
    ids=["truncated", "garbage", "crc"],
)
def test_bad_gzip_raises(tmp_path, mangle):
    x = make_images(3)
    blob = gzip.compress(idx_bytes(0x803, x.shape, x.tobytes()))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(mangle(blob))
    with pytest.raises(DataError) as exc:
        data.read_idx(path, "images")
    assert str(path) in str(exc.value)


def test_gz_suffix_with_non_gzip_content(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not a gzip file") as exc:
        data.read_idx(path, "labels")
    assert str(path) in str(exc.value)


def test_unreadable_file_raises(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "absent.gz", "labels")


# --------------------------------------------------------------------------- MNIST directories


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_family_from_root(tmp_path, gz):
    arrays = make_mnist_dir(tmp_path / "root" / "kmnist", gz=gz)
    ds = load_dataset("kmnist", root=tmp_path / "root", download=False)
    assert isinstance(ds, Dataset)
    assert ds.name == "kmnist" and ds.n_classes == 10 and ds.image_shape == (1, 28, 28)
    assert ds.x_train.shape == (50, 784) and ds.x_test.shape == (20, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    expected = (arrays["train_images"].reshape(50, -1) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(ds.x_train, expected, atol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert "kmnist" in repr(ds) and "(50, 784)" in repr(ds)
    assert ds.source == str(tmp_path / "root" / "kmnist")       # where it was found, for the run's log


def test_load_mnist_unflattened_and_root_itself(tmp_path):
    make_mnist_dir(tmp_path / "files", gz=False)
    ds = load_dataset("mnist", root=tmp_path / "files", flatten=False, download=False)
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.min() >= -1.0 and ds.x_train.max() <= 1.0


def test_preprocess_mnist_extremes():
    x = np.array([[[0, 255] + [0] * 26] + [[0] * 28] * 27], dtype=np.uint8)
    out = data.preprocess_mnist(x)
    assert out.shape == (1, 784) and out.dtype == np.float32
    assert out[0, 0] == -1.0 and out[0, 1] == 1.0


def test_count_mismatch_raises(tmp_path):
    d = tmp_path / "mnist"
    make_mnist_dir(d)
    y = np.zeros(49, dtype=np.uint8)
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x801, y.shape, y.tobytes())))
    with pytest.raises(DataError, match="50 images") as exc:
        data.load_mnist_dir(d)
    assert str(d / "train-images-idx3-ubyte.gz") in str(exc.value)
    assert str(d / "train-labels-idx1-ubyte.gz") in str(exc.value)


def test_wrong_image_size_and_label_range(tmp_path):
    d = tmp_path / "mnist"
    make_mnist_dir(d)
    x = np.zeros((20, 32, 32), dtype=np.uint8)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x803, x.shape, x.tobytes())))
    with pytest.raises(DataError, match="28x28"):
        data.load_mnist_dir(d)
    make_mnist_dir(d)
    y = np.full(20, 10, dtype=np.uint8)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x801, y.shape, y.tobytes())))
    with pytest.raises(DataError, match="out of range") as exc:
        data.load_mnist_dir(d)
    assert "t10k-labels-idx1-ubyte.gz" in str(exc.value)


@pytest.mark.parametrize("key", ["train_images", "test_labels"])
def test_zero_sample_idx_file_is_named(tmp_path, key):
    """An IDX file whose header says N = 0 is refused by name (not numpy's 'cannot reshape array of size 0')."""
    d = tmp_path / "mnist"
    make_mnist_dir(d)
    images = key.endswith("images")
    empty = np.zeros((0, 28, 28) if images else (0,), dtype=np.uint8)
    path = d / (data.IDX_FILES[key] + ".gz")
    path.write_bytes(gzip.compress(idx_bytes(0x803 if images else 0x801, empty.shape, b"")))
    with pytest.raises(DataError, match="holds 0") as exc:
        load_dataset("mnist", root=tmp_path, download=False)
    assert str(exc.value).startswith(str(path))


def test_empty_cifar_batch_is_named(tmp_path):
    make_cifar_dir(tmp_path / "cifar10")
    path = tmp_path / "cifar10" / data.CIFAR_BATCH_DIR / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, f, protocol=4)
    with pytest.raises(DataError, match="holds 0 images") as exc:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(path) in str(exc.value)


def test_missing_file_raises(tmp_path):
    d = tmp_path / "mnist"
    make_mnist_dir(d)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found") as exc:
        data.load_mnist_dir(d)
    assert "t10k-labels-idx1-ubyte" in str(exc.value)


def test_corrupt_file_in_dataset_dir_propagates(tmp_path):
    d = tmp_path / "root" / "fmnist"
    make_mnist_dir(d)
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError) as exc:
        load_dataset("fmnist", root=tmp_path / "root", download=False)
    assert str(d / "train-images-idx3-ubyte.gz") in str(exc.value)


# --------------------------------------------------------------------------- CIFAR-10


def test_load_cifar10(tmp_path):
    batches = make_cifar_dir(tmp_path / "root" / "cifar10")
    ds = load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.image_shape == (3, 32, 32) and ds.n_classes == 10
    raw = batches["data_batch_2"][0].reshape(-1, 3, 32, 32)
    mean = np.array(data.CIFAR_MEAN).reshape(1, 3, 1, 1)
    std = np.array(data.CIFAR_STD).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(ds.x_train[4:8], (raw / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_train[4:8], batches["data_batch_2"][1])
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][1])
    flat = load_dataset("cifar10", root=tmp_path / "root", download=False, flatten=True)
    assert flat.x_train.shape == (20, 3072)


def test_load_cifar10_dir_accepts_batch_dir(tmp_path):
    make_cifar_dir(tmp_path)
    x_tr, y_tr, x_te, y_te = data.load_cifar10_dir(tmp_path / data.CIFAR_BATCH_DIR)
    assert x_tr.shape == (20, 3, 32, 32) and x_tr.dtype == np.uint8 and len(y_te) == 4


def test_cifar_missing_batch(tmp_path):
    make_cifar_dir(tmp_path)
    missing = tmp_path / data.CIFAR_BATCH_DIR / "data_batch_3"
    missing.unlink()
    with pytest.raises(DataError) as exc:
        data.load_cifar10_dir(tmp_path)
    assert str(missing) in str(exc.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (lambda good: good[: len(good) // 2], "corrupt"),
        (lambda good: pickle.dumps([1, 2, 3]), "dict"),
        (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "labels"),
        (lambda good: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (lambda good: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1"),
        (lambda good: pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}), "out of range"),
        (lambda good: pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": ["x"]}), "integers"),
        (lambda good: pickle.dumps(os.getcwd), "refusing"),  # no arbitrary globals
    ],
    ids=["truncated", "not-dict", "no-labels", "bad-shape", "count", "label-range", "label-type", "unsafe"],
)
def test_cifar_corrupt_batch(tmp_path, content, match):
    make_cifar_dir(tmp_path)
    path = tmp_path / data.CIFAR_BATCH_DIR / "test_batch"
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(DataError, match=match) as exc:
        data.load_cifar10_dir(tmp_path)
    assert str(path) in str(exc.value)


def test_cifar_numpy2_pickle_protocols(tmp_path):
    make_cifar_dir(tmp_path)
    path = tmp_path / data.CIFAR_BATCH_DIR / "test_batch"
    x = np.full((2, 3072), 7, np.uint8)
    for protocol in (4, 5):
        path.write_bytes(pickle.dumps({"data": x, "labels": np.array([1, 2])}, protocol=protocol))
        _, _, x_te, y_te = data.load_cifar10_dir(tmp_path)
        assert x_te.shape == (2, 3, 32, 32) and list(y_te) == [1, 2]


# --------------------------------------------------------------------------- validation split


def test_validation_split_deterministic_and_disjoint(tmp_path):
    make_mnist_dir(tmp_path / "mnist", n_train=200)
    full = load_dataset("mnist", root=tmp_path, download=False)
    a = load_dataset("mnist", root=tmp_path, download=False, validation=True, seed=3)
    b = load_dataset("mnist", root=tmp_path, download=False, validation=True, seed=3)
    c = load_dataset("mnist", root=tmp_path, download=False, validation=True, seed=4)
    assert a.x_train.shape == (180, 784) and a.x_test.shape == (20, 784)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    ids_train, ids_val = sample_ids(a.x_train), sample_ids(a.x_test)
    assert set(ids_train).isdisjoint(ids_val)
    assert sorted(np.concatenate([ids_train, ids_val])) == list(range(200))
    assert set(sample_ids(c.x_test)) != set(ids_val)
    # labels stay aligned with their images; the real test set is untouched
    np.testing.assert_array_equal(a.y_test, ids_val % 10)
    assert not set(sample_ids(full.x_test)) & set(ids_val)


def test_split_validation_fraction_and_errors():
    x, y = np.arange(10), np.arange(10)
    xt, yt, xv, yv = data.split_validation(x, y, val_fraction=0.25, seed=0)
    assert len(xv) == 2 and len(xt) == 8  # round(2.5) -> 2
    np.testing.assert_array_equal(xt, yt)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            data.split_validation(x, y, val_fraction=bad)
    with pytest.raises(ValueError):
        data.split_validation(x[:1], y[:1])


# --------------------------------------------------------------------------- locations


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError) as exc:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(exc.value)


def test_env_var_and_precedence(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path / "env" / "mnist", n_train=30)
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    assert load_dataset("mnist", download=False).x_train.shape[0] == 30
    # the cache comes after $THREEFACTOR_DATA; an explicit root comes first
    make_mnist_dir(data.cache_dir("mnist"), n_train=40)
    make_mnist_dir(tmp_path / "root" / "mnist", n_train=10)
    assert load_dataset("mnist", download=False).x_train.shape[0] == 30
    assert load_dataset("mnist", root=tmp_path / "root", download=False).x_train.shape[0] == 10
    monkeypatch.delenv("THREEFACTOR_DATA")
    assert load_dataset("mnist", download=False).x_train.shape[0] == 40


def test_incomplete_dir_is_skipped(tmp_path, monkeypatch):
    make_mnist_dir(tmp_path / "env" / "mnist", n_train=30)
    (tmp_path / "env" / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    make_mnist_dir(data.cache_dir("mnist"), n_train=40)
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    assert data.find_dataset("mnist") == data.cache_dir("mnist")
    assert load_dataset("mnist", download=False).x_train.shape[0] == 40


def test_search_dirs_order(tmp_path, monkeypatch):
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data_download, "SYSTEM_DIRS", {"fmnist": ("/sys/fmnist",)})
    assert data.search_dirs("fmnist", root=tmp_path / "r") == [
        tmp_path / "r" / "fmnist",
        tmp_path / "r",
        tmp_path / "env" / "fmnist",
        Path("/sys/fmnist"),
        tmp_path / "xdg-cache" / "threefactor" / "fmnist",
    ]
    assert data.search_dirs("mnist") == [tmp_path / "env" / "mnist", tmp_path / "xdg-cache" / "threefactor" / "mnist"]


def test_cache_dir_default_home(monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir("kmnist") == Path.home() / ".cache" / "threefactor" / "kmnist"
    assert data.cache_dir() == Path.home() / ".cache" / "threefactor"


def test_not_found_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    partial = data.cache_dir("kmnist")
    make_mnist_dir(partial)
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        load_dataset("kmnist", download=False)
    msg = str(exc.value)
    assert "download=False" in msg and str(tmp_path / "env" / "kmnist") in msg
    assert "train-labels-idx1-ubyte" in msg


def test_module_getattr():
    assert data.find_dataset is data_download.find_dataset
    with pytest.raises(AttributeError):
        data.no_such_thing  # noqa: B018


# --------------------------------------------------------------------------- downloading


def serve_mnist(served: Path, name: str, monkeypatch) -> dict:
    arrays = make_mnist_dir(served / name, n_train=30, n_test=10)
    sums = {f"{s}.gz": "md5:" + md5(served / name / f"{s}.gz") for s in STEMS}
    monkeypatch.setitem(data_download.CHECKSUMS, name, sums)
    return arrays


def no_partial_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


def test_download_mnist_into_cache(http_server, monkeypatch):
    base, served, requests = http_server
    arrays = serve_mnist(served, "mnist", monkeypatch)
    monkeypatch.setitem(data_download.MIRRORS, "mnist", base + "mnist/")
    ds = load_dataset("mnist", progress=True)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    cache = data.cache_dir("mnist")
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)
    assert len(requests) == 4
    load_dataset("mnist", progress=False)  # now found in the cache: no new request
    assert len(requests) == 4


def test_download_only_missing_files_and_mirror_env(http_server, tmp_path, monkeypatch):
    base, served, requests = http_server
    serve_mnist(served, "fmnist", monkeypatch)
    monkeypatch.setitem(data_download.MIRRORS, "fmnist", "http://127.0.0.1:9/unused/")
    monkeypatch.setenv("THREEFACTOR_MIRROR", base.rstrip("/"))
    target = tmp_path / "root" / "fmnist"
    target.mkdir(parents=True)
    (target / "t10k-labels-idx1-ubyte.gz").write_bytes((served / "fmnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    ds = load_dataset("fmnist", root=tmp_path / "root", progress=False)
    assert ds.x_test.shape == (10, 784)
    assert sorted(requests) == sorted(f"/fmnist/{s}.gz" for s in STEMS[:3])


def test_download_bad_checksum(http_server, monkeypatch):
    base, served, requests = http_server
    serve_mnist(served, "kmnist", monkeypatch)
    wrong = "0" * 32
    monkeypatch.setitem(data_download.CHECKSUMS["kmnist"], "train-labels-idx1-ubyte.gz", f"md5:{wrong}")
    monkeypatch.setitem(data_download.MIRRORS, "kmnist", base + "kmnist/")
    with pytest.raises(data_download.ChecksumError) as exc:
        load_dataset("kmnist", progress=False)
    assert isinstance(exc.value, DataError)
    bad = data.cache_dir("kmnist") / "train-labels-idx1-ubyte.gz"
    msg = str(exc.value)
    assert str(bad) in msg and wrong in msg and md5(served / "kmnist" / bad.name) in msg
    assert not bad.exists()
    assert no_partial_files(data.cache_dir("kmnist"))


def test_download_file_sha256_and_http_error(http_server, tmp_path):
    base, served, _ = http_server
    (served / "blob").write_bytes(b"hello")
    dest = tmp_path / "dl" / "blob"
    digest = hashlib.sha256(b"hello").hexdigest()
    assert data_download.download_file(base + "blob", dest, digest, progress=False) == dest
    assert dest.read_bytes() == b"hello"
    data_download.download_file(base + "blob", dest, f"sha256:{digest}", progress=False)
    data_download.download_file(base + "blob", dest, None, progress=False)
    with pytest.raises(DataError, match="download from .* failed") as exc:
        data_download.download_file(base + "missing", tmp_path / "dl" / "missing", progress=False)
    assert str(tmp_path / "dl" / "missing") in str(exc.value)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["blob"]


def test_downloads_get_the_umask_mode(http_server, tmp_path):
    """A download is written to a mkstemp file (0600): it must end up 0666 & ~umask like any file."""
    base, served, _ = http_server
    (served / "blob").write_bytes(b"hello")
    old = os.umask(0o022)
    try:
        dest = data_download.download_file(base + "blob", tmp_path / "dl" / "blob", None, progress=False)
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o644


def test_download_tries_next_mirror(http_server, monkeypatch):
    base, served, requests = http_server
    serve_mnist(served, "mnist", monkeypatch)
    monkeypatch.setitem(data_download.MIRRORS, "mnist", (base + "nowhere/", base + "mnist"))
    ds = load_dataset("mnist", progress=False)
    assert ds.x_train.shape == (30, 784)
    assert sum(r.startswith("/nowhere/") for r in requests) == 4


def test_download_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        data_download.download_dataset("svhn", tmp_path)


def make_cifar_archive(path: Path, src: Path, extra: dict[str, bytes] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / data.CIFAR_BATCH_DIR, arcname=data.CIFAR_BATCH_DIR)
        for name, content in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def test_download_cifar10_extracts_safely(http_server, tmp_path, monkeypatch):
    base, served, _ = http_server
    make_cifar_dir(tmp_path / "src")
    archive = served / "cifar10" / data_download.CIFAR_ARCHIVE
    archive.parent.mkdir()
    evil = {"../evil.txt": b"x", "/tmp/evil_abs.txt": b"x", f"{data.CIFAR_BATCH_DIR}/../evil2.txt": b"x"}
    make_cifar_archive(archive, tmp_path / "src", evil)
    monkeypatch.setitem(data_download.CHECKSUMS, "cifar10", {archive.name: "md5:" + md5(archive)})
    monkeypatch.setitem(data_download.MIRRORS, "cifar10", base + "cifar10/")
    ds = load_dataset("cifar10", progress=False)
    assert ds.x_train.shape == (20, 3, 32, 32)
    cache = data.cache_dir("cifar10")
    assert sorted(p.name for p in cache.iterdir()) == sorted([data.CIFAR_BATCH_DIR, archive.name])
    assert not list(tmp_path.rglob("evil*.txt")) and not Path("/tmp/evil_abs.txt").exists()


def test_extract_cifar10_errors(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cannot read archive") as exc:
        data_download.extract_cifar10(bad, tmp_path)
    assert str(bad) in str(exc.value)
    make_cifar_dir(tmp_path / "src")
    (tmp_path / "src" / data.CIFAR_BATCH_DIR / "test_batch").unlink()
    incomplete = tmp_path / "incomplete.tar.gz"
    make_cifar_archive(incomplete, tmp_path / "src")
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        data_download.extract_cifar10(incomplete, tmp_path)
    assert not (tmp_path / data.CIFAR_BATCH_DIR).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_published_checksum_table_complete():
    for name in DATASETS:
        files = data_download.CHECKSUMS[name]
        expected = [data_download.CIFAR_ARCHIVE] if name == "cifar10" else [s + ".gz" for s in STEMS]
        assert sorted(files) == sorted(expected)
        for value in files.values():
            algo, digest = value.split(":")
            assert algo == "md5" and len(digest) == 32 and int(digest, 16) >= 0


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(FULL_FMNIST is None, reason=SKIP_REASON)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(data_download, "SYSTEM_DIRS", {"fmnist": (str(FULL_FMNIST),)})
    ds = load_dataset("fmnist", download=False)
    assert not ds.bundled
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert len(ds.y_train) == 60000 and len(ds.y_test) == 10000
    assert ds.x_train.min() >= -1.0 and ds.x_train.max() <= 1.0
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
