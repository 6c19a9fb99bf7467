"""The seams a user extends through: a kernel by file, a dataset by function or path, the rule's flags,
one vocabulary of names (issue #15, items 2-5)."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

import threefactor as tf
from threefactor.cli import main as cli
from threefactor.data.datasets import load_dataset
from threefactor.data.formats import DataError
from threefactor.training.runs import RunDir
from threefactor.training.train import resolve_config
from synthetic_data import write_split

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
KERNEL_FILE = '''
import threefactor as tf

class Poly(tf.Kernel):
    """k(a, b) = (a·b / s + 1)^2: a kernel no file of threefactor knows."""
    def __init__(self, s=8.0):
        self.s = s
    def matrix(self, v, xp):
        return (v @ v.T / self.s + 1.0) ** 2
    def pullback(self, v, K, C, xp):
        B = C * 2.0 * (v @ v.T / self.s + 1.0) / self.s
        return (B + B.T) @ v
'''


@pytest.fixture(autouse=True)
def _registries():
    """Kernels and datasets registered by a test (or an example it imports) do not outlive it."""
    from threefactor.data import registry
    from threefactor.rule import kernels
    tf.dataset_names()                                   # the built-ins first
    saved = [(obj, {k: (v.copy() if hasattr(v, "copy") else v) for k, v in vars(obj).items()})
             for obj in (kernels.KERNEL_NAMES, registry.DATASET_NAMES)]
    classes, datasets = dict(kernels.KERNEL_CLASSES), dict(registry._REGISTRY)
    yield
    for obj, state in saved:
        vars(obj).clear()
        vars(obj).update(state)
    kernels.KERNEL_CLASSES.clear()
    kernels.KERNEL_CLASSES.update(classes)
    registry._REGISTRY.clear()
    registry._REGISTRY.update(datasets)




@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A small separable 3-class dataset of 4x4 images in an .npz file."""
    rng = np.random.default_rng(0)
    protos = 2.0 * rng.normal(size=(3, 4, 4))
    y = np.arange(300) % 3
    x = (protos[y] + 0.3 * rng.normal(size=(300, 4, 4))).astype(np.float32)
    x_tr, y_tr, x_te, y_te = x[:240], y[:240], x[240:], y[240:]
    path = tmp_path_factory.mktemp("npz") / "blobs.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A synthetic 10-class MNIST layout (IDX files) in a folder named nothing like a dataset."""
    d = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(1)
    protos = rng.random((10, 28, 28)) < 0.3
    for split, n in (("train", 200), ("t10k", 50)):
        y = np.arange(n) % 10
        x = (protos[y] ^ (rng.random((n, 28, 28)) < 0.1)) * 200
        write_split(d, split, x, y)
    return d


def _train(argv, out):
    rc = cli.main(["train", "--epochs", "1", "--backend", "numpy", "--no-progress", "--out", str(out), *argv])
    assert rc == 0
    run = RunDir(out)
    return run.read_config(), run.read_metrics()


def test_kernel_from_a_file_trains_and_passes_check(tmp_path, npz, capsys):
    path = tmp_path / "my_kernels.py"
    path.write_text(KERNEL_FILE)
    spec = f"{path}:Poly"
    cfg, records = _train(["--kernel", spec, "--dataset", str(npz), "--hidden", "16", "16", "--groups", "4",
                           "--lr-local", "0.1", "--lr-out", "0.05", "--batch-size", "40"], tmp_path / "run")
    assert cfg["rule"] == "local" and cfg["kernel"] == spec and cfg["column"] == "Poly grp+div"
    assert cfg["preset"] is None and cfg["dataset"] == str(npz)
    assert np.isfinite(records[-1]["local_objective_1"]) and records[-1]["test_accuracy"] > 100 / 3
    capsys.readouterr()
    assert cli.main(["check", "--kernel", spec, "--backend", "numpy", "--no-conv", "--activation", "selu",
                     "--grouping", "plain", "grp+div"]) == 0
    out = capsys.readouterr().out
    assert "Poly/plain/selu" in out and "Poly/grp+div/selu" in out and "FAIL" not in out
    # the run resumes from its config.json, which names the file
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in RunDir(tmp_path / "run").read_metrics()] == [1, 2]


def test_rule_flags_train_and_are_recorded(tmp_path, idx_dir):
    """The issue's command, on a dataset given by path (a folder of IDX files), 1 epoch."""
    cfg, records = _train(["--rule", "gaussian", "--sigma", "3", "--gamma", "1", "--activation", "selu",
                           "--lr-local", "0.5", "--lr-out", "5e-3", "--dataset", str(idx_dir), "--hidden", "32",
                           "--groups", "8", "--subset", "120", "--slope", "0.02", "--p", "0.3", "--delta", "2",
                           "--label-kernel", "linear"], tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved == cfg
    assert {k: cfg[k] for k in ("rule", "kernel", "sigma", "gamma", "activation", "lr_local", "lr_out", "slope",
                                "p", "delta", "label_kernel", "groups")} == dict(
        rule="gaussian", kernel="gaussian", sigma=3.0, gamma=1.0, activation="selu", lr_local=0.5, lr_out=5e-3,
        slope=0.02, p=0.3, delta=2.0, label_kernel="linear", groups=8)
    assert len(records) == 1 and np.isfinite(records[0]["train_loss"])
    from threefactor.training.config import make_rule
    rule = make_rule(cfg)
    assert (rule.sigma, rule.gamma, rule.activation, rule.p, rule.delta, rule.label_kernel) == \
        (3.0, 1.0, "selu", 0.3, 2.0, "linear")


def test_npz_dataset_trains_by_path(tmp_path, npz, capsys):
    cfg, records = _train(["--dataset", str(npz), "--rule", "cossim", "--grouping", "plain", "--hidden", "16",
                           "--lr-local", "0.5", "--lr-out", "0.05", "--batch-size", "40"], tmp_path / "run")
    assert cfg["rule"] == "cosine" and cfg["kernel"] == "cosine" and cfg["preset"] is None
    assert records[-1]["test_accuracy"] > 100 / 3               # chance is a third
    ds = load_dataset(str(npz))
    assert ds.n_classes == 3 and ds.image_shape == (1, 4, 4) and ds.x_train.shape == (240, 16)
    assert f"data: {npz} (240 training, 60 test samples)" in capsys.readouterr().out   # the path once


def test_a_configuration_without_preset_names_the_missing_rates(npz):
    with pytest.raises(ValueError, match=r"give --lr-out, --lr-local, --groups"):
        resolve_config(dataset=str(npz))
    with pytest.raises(ValueError, match=r"give --lr-local$"):
        resolve_config(kernel="linear", grouping="plain", lr_out=0.1)
    cfg = resolve_config(kernel="linear", grouping="plain", lr_out=0.1, lr_local=0.2)
    assert cfg["rule"] == cfg["kernel"] == "linear" and cfg["preset"] is None


@pytest.mark.parametrize("options,expected", [
    (dict(rule="Gaussian"), ("gaussian", "gaussian", "grp+div", "fmnist-gaussian-grpdiv")),
    (dict(kernel="cossim"), ("cosine", "cosine", "grp+div", "fmnist-cosine-grpdiv")),
    (dict(grouping="grpdiv", rule="COSSIM"), ("cosine", "cosine", "grp+div", "fmnist-cosine-grpdiv")),
    (dict(preset="FMNIST-cossim-grp"), ("cosine", "cosine", "grp", "fmnist-cosine-grp")),
    (dict(preset="mnist-lastlayer"), ("last-layer", None, "plain", "mnist-lastlayer")),
    (dict(rule="gauss", grouping="GRP"), ("gaussian", "gaussian", "grp", "fmnist-gaussian-grp")),
])
def test_names_are_case_insensitive_with_aliases(options, expected):
    cfg = resolve_config(**options)
    assert (cfg["rule"], cfg["kernel"], cfg["grouping"], cfg["preset"]) == expected


@pytest.mark.parametrize("argv,expected", [
    (["--rule", "Gausian"], "rule='Gausian' is not known; did you mean 'gaussian'?"),
    (["--kernel", "cosin"], "kernel='cosin' is not known; did you mean 'cosine'?"),
    (["--grouping", "grp+dv"], "grouping='grp+dv' is not known; did you mean 'grp+div'?"),
    (["--dataset", "fminst"], "dataset='fminst' is not known; did you mean 'fmnist'"),
    (["--preset", "fmnist-gauss-grpdv"], "did you mean 'fmnist-gaussian-grpdiv'"),
    (["--activation", "SELU", "--label-kernel", "lin"], "label_kernel='lin' is not known; did you mean 'linear'?"),
    (["--kernel", "cosine", "--rule", "gaussian"], "contradicts rule='gaussian'"),
    (["--kernel", "cosine", "--rule", "backprop"], "needs a local rule"),
    (["--grouping", "plain", "--p", "0.3"], "p needs grouping"),
])
def test_unknown_names_get_the_nearest_ones_never_the_whole_list(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--no-progress", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err) < 300, err


def test_the_old_long_preset_list_is_gone():
    with pytest.raises(ValueError) as exc:
        resolve_config(preset="fmnist-hebbian")
    assert len(str(exc.value)) < 200 and "cifar10-vgg2x" not in str(exc.value)


def test_registered_kernel_is_a_name_everywhere():
    @tf.register_kernel("test-poly", aliases=("tpoly",))
    class TestPoly(tf.Kernel):
        def matrix(self, v, xp):
            return (v @ v.T + 1.0) ** 2

        def pullback(self, v, K, C, xp):
            B = C * 2.0 * (v @ v.T + 1.0)
            return (B + B.T) @ v
    rule = tf.Rule(kernel="TPOLY", groups=4, p=0.5)
    assert isinstance(rule.kernel, TestPoly) and rule.kernel_name == "test-poly"
    tf.check_rule(rule, backends=["numpy"], raise_on_failure=True)
    assert resolve_config(kernel="tpoly", lr_out=0.1, lr_local=0.1, groups=32)["rule"] == "test-poly"


def test_the_naive_and_torch_references_use_the_kernel_object():
    """A kernel needs no edit in verify/: the pair sums and autograd evaluate the object itself."""
    from threefactor.rule.kernels import kernel_object
    from threefactor.verify import naive
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 3))
    for name in tf.kernel_names():
        rule = tf.Rule(kernel=name)
        np.testing.assert_allclose(naive.kernel_matrix(v, rule), kernel_object(rule).matrix(v, np),
                                   rtol=1e-12, atol=1e-14)
    torch = pytest.importorskip("torch")
    from threefactor.verify.torch_ref import _kernel
    for name in tf.kernel_names():
        rule = tf.Rule(kernel=name)
        got = _kernel(torch, torch.as_tensor(v), rule).numpy()
        np.testing.assert_allclose(got, kernel_object(rule).matrix(v, np), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arrays,expected", [
    (dict(x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 0, 1])), "lacks x_test, y_test"),
    (dict(x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 5)),
          y_test=np.array([0, 1])), "x_train's samples are (3,) but x_test's are (5,)"),
    (dict(x_train=np.zeros((4, 3)), y_train=np.array([0.0, 1, 0, 1]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "y_train must hold integer class labels"),
    (dict(x_train=np.zeros((4, 3)), y_train=np.array([0, 1, -1, 1]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "labels must be 0 .. n_classes-1"),
    (dict(x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 0]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "y_train must be 1-d with one label per sample (4)"),
    (dict(x_train=np.full((4, 3), np.nan), y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "x_train holds NaN or Inf"),
    (dict(x_train=np.zeros((4, 3), dtype=bool), y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 3)),
          y_test=np.array([0, 1])), "x_train must hold numbers"),
])
def test_a_bad_npz_is_named_with_what_was_expected(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc:
        load_dataset(str(path))
    assert str(exc.value).startswith(str(path)) and expected in str(exc.value), str(exc.value)


def test_a_path_that_is_no_dataset_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for path, expected in ((tmp_path / "missing.npz", "no such file or folder"),
                           (tmp_path / "notes.txt", "must be an .npz"),
                           (tmp_path, "holds no dataset")):
        with pytest.raises(DataError, match="^" + str(path).replace("+", r"\+")) as exc:
            load_dataset(str(path))
        assert expected in str(exc.value)


def test_old_run_directories_resume_and_tabulate_in_todays_names(tmp_path, npz):
    """A config.json written before the vocabulary (rule 'cossim', no kernel key) resumes and joins
    the new runs' cell in threefactor table."""
    base = ["--dataset", str(npz), "--grouping", "plain", "--hidden", "16", "--lr-local", "0.5",
            "--lr-out", "0.05", "--batch-size", "40"]
    _train([*base, "--rule", "cosine", "--seed", "0", "--epochs", "2"], tmp_path / "new")
    _train([*base, "--rule", "cosine", "--seed", "1"], tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    old = json.loads(path.read_text())
    old.update(rule="cossim", column="cossim")
    del old["kernel"]
    path.write_text(json.dumps(old))
    assert cli.main(["train", "--resume", str(tmp_path / "old"), "--epochs", "2", "--rule", "cossim",
                     "--no-progress"]) == 0
    from threefactor.training.report import find_runs, summarize
    cells = summarize(find_runs([tmp_path / "new", tmp_path / "old"]))
    assert len(cells) == 1 and list(cells)[0][1] == "cosine", cells


# -- the README's examples (section "Extending threefactor") -------------------------------------

def test_example_kernel_checks_and_trains(tmp_path, npz, capsys):
    spec = str(EXAMPLES / "my_kernel.py") + ":InverseMultiquadric"
    assert cli.main(["check", "--kernel", spec, "--backend", "numpy", "--activation", "lrelu",
                     "--grouping", "plain", "grp+div"]) == 0
    assert "FAIL" not in capsys.readouterr().out
    cfg, records = _train(["--kernel", spec, "--dataset", str(npz), "--hidden", "16", "--groups", "4",
                           "--lr-local", "0.5", "--lr-out", "0.05", "--batch-size", "40"], tmp_path / "run")
    assert cfg["kernel"] == spec and records[-1]["test_accuracy"] > 100 / 3
    # once imported it is a name too (the example registers it as "imq")
    assert tf.Rule(kernel="IMQ").kernel_name == "imq"


def test_example_dataset_trains(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("my_dataset", EXAMPLES / "my_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert "blobs" in tf.dataset_names()
    ds = load_dataset("Blobs")
    assert ds.image_shape == (1, 4, 4) and ds.n_classes == 3 and ds.x_train.shape == (600, 16)
    assert mod.main(tmp_path / "run") > 60.0                  # chance is a third
    assert "data: blobs (600 training, 150 test samples)" in capsys.readouterr().out    # not "from None"


def test_registrations_do_not_leak_between_tests():
    assert "imq" not in tf.kernel_names() and "test-poly" not in tf.kernel_names()
    assert "blobs" not in tf.dataset_names()


def test_readme_shows_the_examples_as_they_are():
    """The README's kernel and dataset code is the code of examples/my_kernel.py and my_dataset.py (its
    third block, the backend, is run as written by tests/test_architecture.py)."""
    import re
    text = (EXAMPLES.parent / "README.md").read_text()
    section = text[text.index("## Extending threefactor"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for block, name in zip(blocks, ("my_kernel.py", "my_dataset.py")):
        source = (EXAMPLES / name).read_text()
        missing = [line for line in block.splitlines() if line.strip() and line not in source.splitlines()]
        assert not missing, (name, missing)


@pytest.mark.parametrize("keys", [None, {"a": np.zeros(3)}])
def test_train_names_a_missing_or_wrong_dataset_path_before_asking_for_rates(tmp_path, capsys, keys):
    """Without a preset the rates are missing too; the path is the first thing wrong, so it is named
    (status 1), not 'give --lr-out, --lr-local, --groups'."""
    path = tmp_path / "data.npz"
    if keys is not None:
        np.savez(path, **keys)
    assert cli.main(["train", "--dataset", str(path), "--no-progress", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and ("no such file" in err or "lacks x_train" in err) and "--lr-out" not in err, err
    assert not (tmp_path / "r").exists()
