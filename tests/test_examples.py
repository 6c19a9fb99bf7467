"""The examples run as documented, on a few steps of real data (docs that cannot rot)."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
FMNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_third_factor_anatomy(tmp_path):
    ex = _load("third_factor_anatomy")
    out = tmp_path / "tf.png"
    before, after, history = ex.main(["--epochs", "1", "--subset", "1024", "--batch", "40",
                                      "--backend", "numpy", "--out", str(out)])
    assert out.stat().st_size > 10_000
    assert history.shape == (1, 3) and np.all(np.isfinite(history))
    labels = np.repeat(np.arange(10), 4)
    same = labels[:, None] == labels[None, :]
    for K, A, kyc, gamma in (before, after):
        assert K.shape == A.shape == (40, 40)
        np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-12)
    # A = (2k̊z − γk̊y) ⊙ K / m²: while K is nearly constant (at initialisation) same-class
    # pairs (k̊y > 0) get the pulling (negative) sign, the others the pushing one
    assert (before[1][same] < 0).all() and (before[1][~same] > 0).all()
    # four local steps already make same-class pairs more alike than the others
    gap = lambda K: K[same].mean() - K[~same].mean()
    assert gap(after[0]) > gap(before[0])


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_custom_kernel(capsys):
    ex = _load("custom_kernel")
    acc = ex.main(["--subset", "1024", "--backend", "numpy"])
    assert set(acc) == {"inverse multiquadric", "gaussian"}
    for name, a in acc.items():
        assert len(a) == 1 and 15.0 < a[0] <= 100.0, (name, a)      # chance is 10 %
    printed = capsys.readouterr().out
    assert "complex  max rel. error" in printed


def test_custom_kernel_pullback_is_the_gradient():
    """The example's kernel: its pullback equals the complex-step derivative of Σ C ⊙ K."""
    ex = _load("custom_kernel")
    k = ex.InverseMultiquadric(s=3.0)
    rng = np.random.default_rng(0)
    v, C = rng.normal(size=(5, 3)), rng.normal(size=(5, 5))
    g = k.pullback(v, k.matrix(v, np), C, np)
    h = 1e-30
    for i in range(5):
        for d in range(3):
            vc = v.astype(complex)
            vc[i, d] += 1j * h
            assert abs(np.sum(C * k.matrix(vc, np)).imag / h - g[i, d]) <= 1e-12 * max(1.0, abs(g[i, d]))


def _fmnist_found():
    from threefactor.data_download import find_dataset
    return find_dataset("fmnist", None) is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _fmnist_found(), reason="Fashion-MNIST not found (a GPU machine: carry it and set "
                                                 "THREEFACTOR_DATA, see benchmarks/gpu_check.sh)")
@pytest.mark.parametrize("name,argv", [
    ("third_factor_anatomy", ["--epochs", "1", "--subset", "1024", "--batch", "40"]),
    ("custom_kernel", ["--subset", "1024"]),
])
def test_examples_on_the_gpu(tmp_path, name, argv):
    """The examples with --backend cupy (real GPU only: over the whole test set the emulator takes minutes;
    on the emulator, with a small subset, both ran in this session)."""
    import cupy_emulator

    from threefactor.backends import BackendUnavailable, get_backend
    try:
        get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(str(exc))
    if cupy_emulator.active():
        pytest.skip("too slow on the CuPy emulator")
    extra = ["--out", str(tmp_path / "fig.png")] if name == "third_factor_anatomy" else []
    assert _load(name).main(argv + ["--backend", "cupy"] + extra) is not None
