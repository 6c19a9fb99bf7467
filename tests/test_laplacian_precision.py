"""The Laplacian primitive ignores A's diagonal: near-identity kernels keep their accuracy.

(L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j) (Eq. 12, 40-42).  The pair j = i multiplies
v_i - v_i = 0; computed as diag(A·1) v - A v with A_ii inside both terms it cancels
only up to round-off, which loses every digit when all pairs are far apart relative
to σ (K ≈ I, A_ii ≫ A_ij).  Here the update is compared with the literal pair sums
of :mod:`threefactor.verify.naive` (where z_i - z_i is exactly 0), and each backend's
``laplacian`` with the literal sum over j ≠ i, for an A whose diagonal dominates.

The torch autograd oracle (:mod:`threefactor.verify.torch_ref`) had the same cancellation in
exactly these cases (it differentiated through d_ii = ‖v_i‖² + ‖v_i‖² - 2 v_i·v_i); it now
masks d's diagonal, and is checked here against the pair sums too.
"""
import numpy as np
import pytest

import threefactor as tf
from threefactor.verify import naive as pairwise
from threefactor.backends import get_backend
from threefactor.rule.rules import Rule

from conftest import backend_usable


TOL = {np.float64: 1e-10, np.float32: 1e-4}
CPU_BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(not backend_usable(name),
                                                             reason=f"backend {name} is unavailable here"))
                for name in ("numpy", "numba")]


def rel_err(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    assert scale > 0
    return float(np.max(np.abs(got - want)) / scale)


def near_identity_problem(case):
    """(x, w, labels, rule) of a batch whose Gaussian kernel matrix is I to ~1e-15 or closer."""
    rng = np.random.default_rng(0)
    if case == "m2_n1024":              # the audit's reproduction: m = 2, n_out = 1024, σ = 5
        x, w, y, kw = rng.normal(size=(2, 100)), rng.normal(size=(1024, 100)) / 10, [0, 1], {}
    elif case == "x100_m16":           # large inputs, m = 16
        x, w, kw = rng.normal(size=(16, 100)) * 100, rng.normal(size=(64, 100)) / 10, {"sigma": 50.0}
        y = np.arange(16) % 10
    elif case == "sigma005_m16":       # narrow kernel
        x, w, kw = rng.normal(size=(16, 100)), rng.normal(size=(1024, 100)) / 1000, {"sigma": 0.05}
        y = np.arange(16) % 10
    elif case == "grouped_m16":        # grouped rule: v (16, 4), d <= m
        x, w, kw = rng.normal(size=(16, 20)), rng.normal(size=(32, 20)), {"sigma": 0.05, "groups": 4}
        y = np.arange(16) % 10
    elif case == "m2_n256_f32":        # small enough for float32's exponent range
        x, w, y, kw = rng.normal(size=(2, 100)), rng.normal(size=(256, 100)) / 10, [0, 1], {"sigma": 3.0}
    else:
        raise ValueError(case)
    return x, w, np.asarray(y), Rule(kernel="gaussian", activation="selu", **kw)


def update(x, w, y, rule, backend, dtype):
    return tf.local_update(x.astype(dtype), w.astype(dtype), y, kernel="gaussian", sigma=rule.sigma,
                           gamma=rule.gamma, activation=rule.activation, groups=rule.groups, p=rule.p,
                           delta=rule.delta, backend=backend, n_classes=10)


def literal_laplacian(A, v):
    """Σ_{j≠i} A_ij (v_i - v_j) pair by pair, in float64."""
    A, v = np.asarray(A, dtype=np.float64), np.asarray(v, dtype=np.float64)
    out = np.zeros_like(v)
    for i in range(v.shape[0]):
        for j in range(v.shape[0]):
            if j != i:
                out[i] += A[i, j] * (v[i] - v[j])
    return out


def dominant_diagonal(m, d, dtype, off, seed=0):
    """(A, v): A symmetric with A_ii = 1 and off-diagonal entries of size ``off``; v (m, d)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, m)) * off
    A = (A + A.T) / 2
    np.fill_diagonal(A, 1.0)
    return A.astype(dtype), rng.standard_normal((m, d)).astype(dtype)


@pytest.mark.parametrize("case", ["m2_n1024", "x100_m16", "sigma005_m16", "grouped_m16"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_near_identity_update_matches_pair_sums(case, backend):
    x, w, y, rule = near_identity_problem(case)
    *_, v = pairwise.representation(x, w, rule)
    K = pairwise.kernel_matrix(v, rule)
    assert np.max(np.abs(K - np.eye(len(y)))) < 1e-12            # K is the identity up to round-off
    want = pairwise.pairwise_update(x, w, y, 10, rule)
    err = rel_err(update(x, w, y, rule, backend, np.float64), want)
    assert err <= TOL[np.float64], f"{case} on {backend}: relative error {err:.3g} against the pair sums"


@pytest.mark.parametrize("case", ["m2_n1024", "x100_m16", "sigma005_m16", "grouped_m16"])
def test_the_autograd_oracle_matches_pair_sums_near_the_identity(case):
    pytest.importorskip("torch", reason="PyTorch is not installed (the optional oracle)")
    from threefactor.verify.torch_ref import autograd_update
    x, w, y, rule = near_identity_problem(case)
    err = rel_err(autograd_update(x, w, y, 10, rule), pairwise.pairwise_update(x, w, y, 10, rule))
    assert err <= TOL[np.float64], f"{case}: torch autograd relative error {err:.3g} against the pair sums"


@pytest.mark.parametrize("case", ["m2_n1024", "m2_n256_f32"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_near_identity_update_float32(case, backend):
    x, w, y, rule = near_identity_problem(case)
    want = pairwise.pairwise_update(x, w, y, 10, rule)
    err = rel_err(update(x, w, y, rule, backend, np.float32), want)
    assert err <= TOL[np.float32], f"{case} on {backend}, float32: relative error {err:.3g}"


@pytest.mark.parametrize("dtype, off", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("m, d", [(30, 7), (7, 30), (16, 16)])          # d <= m and d > m (numba's two forms)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_laplacian_ignores_the_diagonal(backend, m, d, dtype, off):
    A, v = dominant_diagonal(m, d, dtype, off)
    be = get_backend(backend)
    got = be.laplacian(A, v)
    assert got.dtype == dtype
    err = rel_err(got, literal_laplacian(A, v))
    assert err <= TOL[dtype] / 10, f"{backend} laplacian, diagonal 1, off-diagonal {off:g}: error {err:.3g}"
    A2 = A.copy()
    np.fill_diagonal(A2, 123.0)                                           # any diagonal: the same result
    np.testing.assert_array_equal(be.laplacian(A2, v), got)
    if backend != "numpy":
        assert rel_err(got, get_backend("numpy").laplacian(A, v)) <= TOL[dtype] / 10


# -- the CuPy backend (a GPU, or the CPU emulator: THREEFACTOR_EMULATE_CUPY=1 ... -m gpu) --------
@pytest.fixture(scope="module")
def cupy_backend():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install threefactor[gpu])")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver / no device
        pytest.skip(f"CuPy is installed but no GPU is usable: {exc}")
    if n < 1:
        pytest.skip("CuPy is installed but no GPU is visible")
    return cupy, get_backend("cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("row_threads", [None, 32])                     # 32: the strided loop runs (m > 32)
@pytest.mark.parametrize("dtype, off", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("m, d", [(40, 7), (7, 40)])
def test_cupy_laplacian_ignores_the_diagonal(cupy_backend, m, d, dtype, off, row_threads, monkeypatch):
    from threefactor.backends import cupy as cupy_module
    if row_threads is not None:
        monkeypatch.setattr(cupy_module, "ROW_THREADS", row_threads)
    cupy, cp = cupy_backend
    A, v = dominant_diagonal(m, d, dtype, off)
    got = cp.laplacian(cp.asarray(A), cp.asarray(v))
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype
    got = cupy.asnumpy(got)
    want = get_backend("numpy").laplacian(A, v)
    assert rel_err(got, literal_laplacian(A, v)) <= TOL[dtype] / 10
    assert rel_err(got, want) <= TOL[dtype] / 10
    A2 = A.copy()
    np.fill_diagonal(A2, 123.0)
    np.testing.assert_array_equal(cupy.asnumpy(cp.laplacian(cp.asarray(A2), cp.asarray(v))), got)


@pytest.mark.gpu
def test_cupy_near_identity_update_matches_pair_sums(cupy_backend):
    x, w, y, rule = near_identity_problem("m2_n1024")
    want = pairwise.pairwise_update(x, w, y, 10, rule)
    err = rel_err(update(x, w, y, rule, "cupy", np.float64), want)
    assert err <= TOL[np.float64], f"cupy: relative error {err:.3g} against the pair sums"
