"""The examples run as documented, on a few steps of real data (docs that cannot rot): the full
Fashion-MNIST where one is found, else the bundled 10k sample (``threefactor.data.sample``)."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    from threefactor.data.download import find_dataset
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


def _switch_cosines(ex, run, trule):
    """Per stimulus switch i >= 2 (switch 1 has no b3 yet, so M = 0): cosine of the net ΔW over the
    switch's plasticity window with the discrete two-point update of the same pair (Eq. 57)."""
    from threefactor.rule.online import two_point_update
    dt, on = ex.DT, np.rint(run["onsets"] / ex.DT).astype(int)
    window = int((ex.C1 + 9.0 / ex.C2) / dt) + int(run["lag"] / dt)
    cosines = []
    for i in range(2, len(on)):
        start, end = on[i] - 1, min(on[i] + window, len(run["t"]) - 1)
        net = (run["w"][end] - run["w"][start]).ravel()
        c = run["classes"]
        settle = int(5.0 / dt)                       # the input has settled on its pattern (τ_x ≪ 5)
        x_prev, x_now = run["x"][on[i - 1] + settle], run["x"][on[i] + settle]
        ref = two_point_update(x_now[None], x_prev[None], run["w"][start], c[i:i + 1], c[i - 1:i], trule,
                               b3=run["b3"][start]).ravel()
        cosines.append(net @ ref / (np.linalg.norm(net) * np.linalg.norm(ref)))
    return np.array(cosines)


@pytest.mark.parametrize("gaps", [False, True])
def test_online_circuit_switches_follow_the_discrete_two_point_update(gaps):
    """Each switch's net weight change points along the discrete two-point update of its pair: the
    label signal c1 of a switch must act from its onset (it once arrived at the read-out's peak, so
    the first part of each bump used the previous switch's label: cosines down to -0.98)."""
    ex = _load("online_circuit")
    from threefactor.rule.online import TwoPointRule
    from threefactor.rule.rules import Rule
    rng = np.random.default_rng(0)
    background = np.full(ex.N_IN, 0.2)
    prototypes = background + 1.5 * rng.standard_normal((ex.N_CLASSES, ex.N_IN))
    w0 = rng.standard_normal((ex.N_OUT, ex.N_IN)) / np.sqrt(ex.N_IN)
    trule = TwoPointRule(Rule(sigma=2.0, gamma=2.0, activation="linear"), n_classes=ex.N_CLASSES, beta=ex.BETA)
    run = ex.simulate(np.random.default_rng(1), prototypes, background, w0, trule, 10, gaps)
    cos = _switch_cosines(ex, run, trule)
    assert len(cos) == 8 and np.all(cos >= 0.8), np.round(cos, 2)


@pytest.mark.parametrize("argv, message", [(["--batch", "5"], "--batch must be >= 10"),
                                           (["--epochs", "-1"], "--epochs must be >= 0")])
def test_third_factor_anatomy_refuses_a_batch_without_every_class(argv, message, capsys):
    # --batch 5 gave 0 samples per class and crashed on an empty array after loading the data
    ex = _load("third_factor_anatomy")
    with pytest.raises(SystemExit):
        ex.parse_args(argv)
    assert message in capsys.readouterr().err


def test_my_dataset_takes_its_arguments(tmp_path):
    """`python examples/my_dataset.py --epochs 2 --out DIR` trains 2 epochs into DIR (it once ignored both)."""
    import subprocess
    import sys

    out = tmp_path / "blobs"
    done = subprocess.run([sys.executable, str(EXAMPLES / "my_dataset.py"), "--epochs", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"run directory: {out}" in done.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "runs").exists()
    bad = subprocess.run([sys.executable, str(EXAMPLES / "my_dataset.py"), "--epoch", "2"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "unrecognized arguments: --epoch" in bad.stderr
