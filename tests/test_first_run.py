"""A new user's first run (issue #16, items 5 and 6): the bundled Fashion-MNIST sample, a missing dataset,
and the messages and exit statuses of the small things a first run trips on."""
import json
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.data import download as data_download
from threefactor.data import sample
from threefactor.data.datasets import BundledSampleWarning, DataError, load_dataset
from threefactor.data.formats import read_idx
from threefactor.training import report

from real_data import FULL_FMNIST, SKIP_REASON
from synthetic_data import write_split


@pytest.fixture(autouse=True)
def fresh_machine(tmp_path, monkeypatch):
    """No full copy anywhere: no $THREEFACTOR_DATA, no Debian package, an empty cache; no network."""
    monkeypatch.delenv("THREEFACTOR_DATA", raising=False)
    monkeypatch.setenv("THREEFACTOR_MIRROR", "http://127.0.0.1:9")       # nothing listens there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data_download, "SYSTEM_DIRS", {})
    monkeypatch.chdir(tmp_path)




def _fake_full_fmnist(folder, n_train=40, n_test=20):
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_split(folder, split, rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)


# -- the bundled sample -------------------------------------------------------------------------------


def test_the_sample_is_10k_training_and_2k_test_images_balanced_and_checksummed():
    sample.verify_sample()                       # raises on a checksum mismatch
    d = sample.sample_dir("fmnist")
    y_tr = read_idx(d / "train-labels-idx1-ubyte.gz", "labels")
    y_te = read_idx(d / "t10k-labels-idx1-ubyte.gz", "labels")
    x_tr = read_idx(d / "train-images-idx3-ubyte.gz", "images")
    assert x_tr.shape == (10000, 28, 28) and x_tr.dtype == np.uint8 and 0 < x_tr.mean() < 255
    assert np.bincount(y_tr).tolist() == [1000] * 10 and np.bincount(y_te).tolist() == [200] * 10
    size = sum(f.stat().st_size for f in d.glob("*.gz"))
    assert 4e6 < size < 6e6, size                # "a few MB"
    assert (d / "LICENSE").is_file() and "MIT" in (d / "LICENSE").read_text()
    with pytest.raises(ValueError, match="no bundled sample of 'mnist'"):
        sample.sample_dir("mnist")


@pytest.mark.skipif(FULL_FMNIST is None, reason=SKIP_REASON)
def test_the_sample_is_the_first_images_of_each_class_of_the_full_set(tmp_path):
    """The sample is what its docstring says: make_sample rebuilds the same images from a full copy."""
    out = tmp_path / "rebuilt"
    sums = sample.make_sample(FULL_FMNIST, out)
    assert set(sums) == set(sample.SAMPLE_CHECKSUMS)
    for name in sums:
        kind = "images" if "images" in name else "labels"
        assert np.array_equal(read_idx(out / name, kind), read_idx(sample.SAMPLE_DIR / name, kind)), name
    y_full = read_idx(next(FULL_FMNIST.glob("train-labels*")), "labels")
    keep = sample.select_sample(y_full, 1000)
    assert keep.max() < 10648 and np.array_equal(y_full[keep], read_idx(out / "train-labels-idx1-ubyte.gz", "labels"))


def test_a_corrupt_sample_is_a_clear_error_exit_1(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "sample"
    shutil.copytree(sample.SAMPLE_DIR, broken)
    path = broken / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(sample, "SAMPLE_DIR", broken)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: the bundled Fashion-MNIST sample is corrupt"):
        load_dataset("fmnist", bundled="only")
    assert cli.main(["train", "--epochs", "1", "--backend", "numpy", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"threefactor train: error: {path}: the bundled Fashion-MNIST sample")
    assert "reinstall threefactor" in err[0] and not (tmp_path / "runs").exists()


def test_load_dataset_falls_back_to_the_sample_only_where_no_full_copy_is_found(tmp_path, monkeypatch):
    with pytest.warns(BundledSampleWarning, match=re.escape(sample.SAMPLE_NOTE)):
        ds = load_dataset("fmnist")
    assert ds.bundled and ds.x_train.shape == (10000, 784) and ds.x_test.shape == (2000, 784)
    assert ds.source == str(sample.SAMPLE_DIR) and "bundled sample" in repr(ds)
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    # a full copy found anywhere wins, silently
    _fake_full_fmnist(tmp_path / "env" / "fmnist")
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = load_dataset("fmnist")
    assert not full.bundled and full.x_train.shape == (40, 784)
    assert load_dataset("fmnist", bundled="only").bundled
    monkeypatch.delenv("THREEFACTOR_DATA")
    # never: the full set or an error; an explicit root is a wish for the full set there
    with pytest.raises(DataError, match="dataset not found and download=False"):
        load_dataset("fmnist", bundled="never", download=False)
    with pytest.raises(DataError, match="dataset not found and download=False"):
        load_dataset("fmnist", root=tmp_path / "nothing", download=False)
    with pytest.raises(ValueError, match="bundled must be one of 'fallback', 'never', 'only', got 'yes'"):
        load_dataset("fmnist", bundled="yes")


def test_the_first_command_trains_on_the_sample_says_so_and_records_it(tmp_path, capsys, monkeypatch):
    argv = ["train", "--epochs", "1", "--subset", "512", "--hidden", "64", "--batch-size", "128",
            "--backend", "numpy", "--no-progress", "--out", "run"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("bundled") == 1 and f"data: {sample.SAMPLE_NOTE}\n" in out
    assert "for the full set: apt-get install dataset-fashion-mnist, $THREEFACTOR_DATA or --data-root" in out
    assert out.strip().splitlines()[-1] == \
        "wrote run: config.json, metrics.jsonl, metrics.csv, checkpoint.npz, curves.png"
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"] == "bundled-sample" and cfg["data_source"] == str(sample.SAMPLE_DIR)
    # a resumed run keeps its data, even where a full copy has appeared since
    _fake_full_fmnist(tmp_path / "env" / "fmnist", n_train=600, n_test=100)
    monkeypatch.setenv("THREEFACTOR_DATA", str(tmp_path / "env"))
    assert cli.main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 0
    assert f"data: {sample.SAMPLE_NOTE}" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == "bundled-sample"
    # a new run there uses the full copy and records it
    assert cli.main(argv[:-1] + ["full"]) == 0
    assert "bundled" not in capsys.readouterr().out
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["data"] == "full" and cfg["data_source"] == str(tmp_path / "env" / "fmnist")
    # the table keeps them apart and says which is which
    assert cli.main(["table", "run", "full"]) == 0
    table = capsys.readouterr().out
    assert "| fashion-MNIST (bundled 10k sample) |" in table and "| fashion-MNIST |" in table


def test_table_counts_runs_from_before_the_data_key_as_full_set_runs(tmp_path):
    for name, extra, seed in (("old", {}, 0), ("new", {"data": "full", "data_source": "/x"}, 1)):
        (tmp_path / name).mkdir()
        cfg = dict(dataset="fmnist", rule="gaussian", grouping="grp+div", epochs=1, seed=seed, **extra)
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_accuracy": 80.0}) + "\n")
    cells = report.summarize(report.find_runs([tmp_path / "old", tmp_path / "new"]))
    assert len(cells) == 1 and next(iter(cells.values()))["seeds"] == [0, 1]


def test_validation_on_the_sample_says_its_split(capsys):
    assert cli.main(["train", "--validation", "--epochs", "1", "--subset", "256", "--hidden", "64", "--backend",
                     "numpy", "--no-progress", "--out", "v"]) == 0
    assert f"data: {sample.SAMPLE_NOTE} (--validation: 9000 training, 1000 validation)\n" in capsys.readouterr().out


def test_subset_beyond_the_sample_names_it(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--subset", "20000", "--backend", "numpy", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "more than the 10000 samples of the fmnist training set (the bundled sample)" in err


# -- a dataset that is missing --------------------------------------------------------------------------


@pytest.mark.parametrize("cache_exists", [False, True])
def test_a_missing_dataset_is_one_message_exit_1_and_leaves_no_folder(tmp_path, capsys, cache_exists):
    cache = tmp_path / "xdg-cache"
    if cache_exists:
        cache.mkdir()
    assert cli.main(["train", "--dataset", "mnist", "--epochs", "1", "--backend", "numpy", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    msg = err[0]
    assert msg.startswith("threefactor train: error: mnist: dataset not found and downloading it failed: ")
    assert f"looked in: {cache / 'threefactor' / 'mnist'} (absent)" in msg
    assert "fixes: put its four IDX files (train-images-idx3-ubyte[.gz]" in msg
    assert "set $THREEFACTOR_DATA=DIR or give --data-root DIR" in msg and "$THREEFACTOR_MIRROR" in msg
    # no empty folder left: the cache folders the download made are gone, one that existed stays
    assert not (cache / "threefactor").exists() and cache.exists() == cache_exists
    assert not (tmp_path / "runs").exists()


def test_missing_fashion_mnist_under_an_explicit_root_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data_download, "SYSTEM_DIRS", {"fmnist": ("/nonexistent/fashion-mnist",)})
    with pytest.raises(DataError) as exc:
        load_dataset("fmnist", root=tmp_path / "data", progress=False)
    msg = str(exc.value)
    assert "fixes: apt-get install dataset-fashion-mnist (/nonexistent/fashion-mnist)" in msg
    assert f"{tmp_path / 'data' / 'fmnist'} (absent)" in msg
    assert not (tmp_path / "data").exists()


# -- the command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,expected", [
    (["train", "--epoch", "3"], "threefactor train: error: unrecognized arguments: --epoch 3 (--epoch: did you "
                                "mean --epochs?)"),
    (["train", "--no-such-flag", "3"], "threefactor train: error: unrecognized arguments: --no-such-flag 3; "
                                       "see 'threefactor train --help'"),
    (["check", "--kernl", "gaussian"], "threefactor check: error: unrecognized arguments: --kernl gaussian "
                                       "(--kernl: did you mean --kernel?)"),
    (["bench", "--quik"], "threefactor bench: error: unrecognized arguments: --quik (--quik: did you mean --quick?)"),
    (["table", "runs", "--digit", "2"], "threefactor table: error: unrecognized arguments: --digit 2"),
    (["check", "--seed", "1", "--dtyp", "float32"], "threefactor check: error: unrecognized arguments: --dtyp"),
])
def test_unknown_or_abbreviated_options_name_the_command_exit_2(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert re.search("^" + re.escape(expected), err, re.M), err
    assert "threefactor: error" not in err


def test_no_parser_takes_abbreviations():
    parser, sub = cli.build_parser()
    assert parser.allow_abbrev is False
    assert all(p.allow_abbrev is False for p in sub.choices.values())


def test_unknown_option_from_the_shell():
    proc = subprocess.run([sys.executable, "-m", "threefactor", "train", "--epoch", "3"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.search(r"^threefactor train: error: unrecognized arguments: --epoch 3", proc.stderr, re.M)


def test_check_says_a_repeated_skip_once(monkeypatch, capsys):
    from threefactor.verify import gradcheck
    monkeypatch.setattr(gradcheck, "torch_available", lambda: False)
    assert cli.main(["check", "--backend", "numpy", "--kernel", "gaussian", "--activation", "lrelu", "relu",
                     "--no-conv"]) == 0
    out = capsys.readouterr().out
    assert out.count("torch is not installed") == 1
    assert re.search(r"^skipped 6 torch comparisons: torch is not installed: pip install -e \".\[autograd\]\" "
                     r"\(in .*\); for PyTorch's CPU-only build \(no ~6 GB of CUDA libraries\) first: "
                     r"pip install torch --index-url https://download.pytorch.org/whl/cpu$", out, re.M)
    assert "6 skipped" in out and not re.search(r"SKIP", out)


def test_bench_quick_writes_to_the_cache_not_the_current_folder(tmp_path, capsys):
    from threefactor.bench.machine import blas_threads, set_threads
    before = blas_threads()
    try:
        assert cli.main(["bench", "--quick", "--backend", "numpy", "--m", "16", "--shapes", "32x64", "--budget", "0",
                         "--no-autograd", "--threads", "1"]) == 0
    finally:
        set_threads(before)
    written = list((tmp_path / "xdg-cache" / "threefactor" / "bench").glob("*-quick.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["kind"] == "update"
    assert f"wrote {written[0]}" in capsys.readouterr().out
    assert not (tmp_path / "benchmarks").exists()


def _synthetic_mnist(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 20)):
        write_split(root / "mnist", split, rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)


def test_divergence_prints_its_clear_error_without_numpy_warnings(tmp_path, capsys):
    _synthetic_mnist(tmp_path / "data")
    argv = ["train", "--dataset", "mnist", "--rule", "backprop", "--grouping", "plain", "--hidden", "32", "32",
            "--batch-size", "32", "--lr-out", "1e3", "--epochs", "2", "--data-root", str(tmp_path / "data"),
            "--backend", "numpy", "--no-progress", "--out", str(tmp_path / "nan")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(argv) == 1
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    err = capsys.readouterr().err
    assert "RuntimeWarning" not in err and err.startswith("threefactor train: error: training diverged in epoch ")


def test_floating_point_warnings_of_a_finite_epoch_are_kept():
    from threefactor.training.loop import _FloatingPointNotes
    big = np.array([3e38], dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _FloatingPointNotes() as notes:
            big * 10
            big * 10
        assert caught == []                     # held back while the epoch runs
        notes.warn(4)
    assert [str(w.message) for w in caught] == [
        "overflow encountered 2 time(s) in NumPy operations during epoch 4 (the epoch stayed finite)"]
    with np.errstate(over="raise"):             # a mode the user chose stays
        with pytest.raises(FloatingPointError), _FloatingPointNotes():
            big * 10
    assert np.geterr()["over"] == "warn"


def test_a_numba_compilation_is_said_once():
    numba = pytest.importorskip("numba")
    from threefactor.backends.compile_note import compile_note

    @numba.njit
    def f(x):
        return x + 1

    @numba.njit
    def g(x):
        return f(x) * 2

    lines = []
    with compile_note(lines.append) as note:
        g(1)
        g(1.5)                                  # a second signature: compiled, not said again
    assert len(lines) == 1 and lines[0].startswith("compiling the Numba kernels (first run only")
    assert note.said and note.seconds > 0
    with compile_note(lines.append) as note:
        g(2)                                    # nothing to compile: nothing said
    assert len(lines) == 1 and not note.said


def test_install_hints_fit_a_checkout_or_an_installed_package(tmp_path, monkeypatch):
    from threefactor import install_hint as ih
    from threefactor.backends import BackendUnavailable, _load
    root = ih.Path(ih.__file__).resolve().parents[1]
    assert ih.install_hint("gpu") == f'pip install -e ".[gpu]" (in {root})'      # tests run from a checkout
    assert "download.pytorch.org/whl/cpu" in ih.install_hint("autograd")
    monkeypatch.setattr(ih, "__file__", str(tmp_path / "site-packages" / "threefactor" / "install_hint.py"))
    assert ih.install_hint("gpu") == 'pip install "threefactor[gpu]"'
    monkeypatch.setitem(sys.modules, "cupy", None)                 # import cupy fails
    _load.cache_clear()
    try:
        with pytest.raises(BackendUnavailable, match=re.escape("cupy is not installed: pip install \"threefactor[gpu]\"")):
            _load("cupy")
    finally:
        _load.cache_clear()


def test_setup_cfg_ships_every_file_of_the_sample():
    """The sample is package data: setup.cfg's pattern takes every file of its folder (a wheel built from
    the package has them; checked by hand with pip wheel, see the commit)."""
    import configparser
    import fnmatch
    from pathlib import Path
    root = Path(sample.__file__).resolve().parents[2]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    patterns = cfg["options.package_data"]["threefactor.data"].split()
    files = [p.relative_to(sample.SAMPLE_DIR.parent).as_posix() for p in sample.SAMPLE_DIR.iterdir()]
    assert len(files) == 5 and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), files
