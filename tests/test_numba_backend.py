"""The Numba backend against the numpy reference: every primitive, then the public API.

Tolerances (max |numba - numpy| / max |numpy|): float64 1e-12, float32 1e-4.
Through the public API a float32 result may instead be at most twice as far from
the float64 reference as numpy's own float32 result is: some rules are
ill-conditioned in float32 (the cosine kernel on grouped v loses ~1e-4 in
numpy itself), and then the two float32 paths differ by that much too.
The first run compiles the kernels for both dtypes (cached on disk afterwards).
"""
import itertools

import numpy as np
import pytest

pytest.importorskip("numba")

import threefactor as tf  # noqa: E402
from threefactor.backends import get_backend  # noqa: E402

TOL = {np.float64: 1e-12, np.float32: 1e-4}
DTYPES = (np.float64, np.float32)
ACTIVATIONS = ("linear", "relu", "lrelu", "selu")
KERNELS = ("gaussian", "cosine", "linear")
#: (groups, p): plain, grouped with p = 0.5, grouped with p = 0.2
GROUPINGS = ((None, 0.2), (4, 0.5), (4, 0.2))
#: (m, n_in, n_out, groups): typical, m = 2, n_out = 2 · groups, m > n
SHAPES = ((24, 20, 16, 4), (2, 5, 8, 4), (40, 6, 8, 4))


@pytest.fixture(scope="module")
def nb():
    return get_backend("numba")


@pytest.fixture(scope="module")
def ref():
    return get_backend("numpy")


def rel_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    scale = np.max(np.abs(want)) if want.size else 0.0
    return float(np.max(np.abs(got.astype(np.float64) - want)) / max(scale, 1e-300))


def assert_close(got, want, dtype, what=""):
    err = rel_err(got, want)
    assert err <= TOL[dtype], f"{what}: relative error {err:.3g} > {TOL[dtype]:g}"


def assert_api_close(fn, x, w, y, dtype, what, **kw):
    """``fn`` with backend numba vs numpy (see the module docstring for float32)."""
    args = (x, w) if y is None else (x, w, y)
    got, want = fn(*args, backend="numba", **kw), fn(*args, backend="numpy", **kw)
    err = rel_err(got, want)
    if err <= TOL[dtype]:
        return
    args64 = tuple(a.astype(np.float64) for a in (x, w)) + args[2:]
    truth = fn(*args64, backend="numpy", **kw)
    own = rel_err(want.astype(np.float64), truth)
    assert dtype == np.float32 and rel_err(got.astype(np.float64), truth) <= 2 * own, \
        f"{what}: relative error {err:.3g} > {TOL[dtype]:g} (numpy float32 vs float64: {own:.3g})"


def data(m, n_in, n_out, dtype, seed=0, n_classes=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    y = rng.integers(0, n_classes, m)
    y[:2] = [0, 1]                       # both classes present even for m = 2
    return x, w, y


# -- primitives ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward(nb, ref, dtype, shape, activation):
    m, n_in, n_out, _ = shape
    x, w, _ = data(m, n_in, n_out, dtype)
    for got, want, name in zip(nb.forward(x, w, activation, 0.1), ref.forward(x, w, activation, 0.1),
                               ("a", "z", "fp")):
        assert_close(got, want, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", (0.0, 0.2, 0.5))
def test_group_stats_and_divisive_norm(nb, ref, dtype, shape, p):
    m, n_in, n_out, groups = shape
    x, w, _ = data(m, n_in, n_out, dtype)
    _, z, _ = ref.forward(x, w, "lrelu", 0.1)
    got, want = nb.group_stats(z, groups, p, 1.0), ref.group_stats(z, groups, p, 1.0)
    for g, r, name in zip(got, want, ("zhat", "u", "v")):
        assert_close(g, r, dtype, name)
    zhat, u, _ = want
    assert_close(nb.divisive_norm(zhat, u, p), ref.divisive_norm(zhat, u, p), dtype, "r")
    mask = ref.keep_select(np.random.default_rng(1), zhat.shape, 0.3, dtype, ((2.0, 0.0),))[0]
    for be in (nb, ref):                 # dropout in the same pass: the bits of the separate multiply
        np.testing.assert_array_equal(be.divisive_norm(zhat, u, p, mask), be.divisive_norm(zhat, u, p) * mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_grouped_is_forward_then_group_stats(nb, ref, dtype, shape, activation):
    """The fused pass: the reference's six arrays, and the bits of Numba's own two-step path."""
    m, n_in, n_out, groups = shape
    x, w, _ = data(m, n_in, n_out, dtype)
    got = nb.forward_grouped(x, w, activation, 0.1, groups, 0.2, 1.0)
    a, z, fp = nb.forward(x, w, activation, 0.1)
    for g, r, name in zip(got, (a, z, fp) + tuple(nb.group_stats(z, groups, 0.2, 1.0)),
                          ("a", "z", "fp", "zhat", "u", "v")):
        np.testing.assert_array_equal(g, r, err_msg=name)
    for g, r, name in zip(got, ref.forward_grouped(x, w, activation, 0.1, groups, 0.2, 1.0),
                          ("a", "z", "fp", "zhat", "u", "v")):
        assert_close(g, r, dtype, name)
    with pytest.raises(ValueError, match="groups=3 does not divide"):
        nb.forward_grouped(x, w, activation, 0.1, 3, 0.2, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("grouped", (False, True))
def test_gaussian_chain(nb, ref, dtype, shape, grouped):
    """gaussian_kernel, gaussian_weights, laplacian and post_* each on the reference's inputs."""
    m, n_in, n_out, groups = shape
    x, w, y = data(m, n_in, n_out, dtype)
    _, z, fp = ref.forward(x, w, "lrelu", 0.1)
    zhat, u, v = ref.group_stats(z, groups, 0.2, 1.0) if grouped else (None, None, z)
    sigma = 0.5 if grouped else 3.0
    K = ref.gaussian_kernel(v, sigma)
    assert_close(nb.gaussian_kernel(v, sigma), K, dtype, "K")
    for kind in ("cosine", "linear"):
        Ky = ref.label_kernel(y, 3, kind, dtype)
        assert_close(nb.label_kernel(y, 3, kind, dtype), Ky, dtype, "Ky")
        A = ref.gaussian_weights(K, Ky, 2.0)
        assert_close(nb.gaussian_weights(K, Ky, 2.0), A, dtype, "A")
    neg_dv = ref.laplacian(A, v)
    assert_close(nb.laplacian(A, v), neg_dv, dtype, "L_A v")
    if grouped:
        got = nb.post_grouped(neg_dv, zhat, u, fp, 0.2, 0.7)
        want = ref.post_grouped(neg_dv, zhat, u, fp, 0.2, 0.7)
    else:
        got, want = nb.post_plain(neg_dv, fp, 0.7), ref.post_plain(neg_dv, fp, 0.7)
    assert_close(got, want, dtype, "post")
    assert_close(nb.hebbian(want, x), ref.hebbian(want, x), dtype, "dW")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", (1, 3, 37, 130))
def test_layer_objective(nb, ref, dtype, m):
    """The one-pass float64 sums give the reference's L (Eq. 9), as a 0-d array of K's dtype;
    float32 inputs land at least as close to the float64 value as numpy's float32 sums."""
    rng = np.random.default_rng(m)
    v = rng.standard_normal((m, 5)).astype(dtype)
    K, Ky = ref.gaussian_kernel(v, 2.0), ref.label_kernel(rng.integers(0, 4, m), 4, "cosine", dtype)
    got = nb.layer_objective(K, Ky, 2.0)
    assert isinstance(got, np.ndarray) and got.shape == () and got.dtype == dtype
    truth = ref.layer_objective(K.astype(np.float64), Ky.astype(np.float64), 2.0)
    scale = max(float(np.abs(K).mean()) ** 2, 1e-300)           # L is a difference of such terms
    if dtype == np.float64:
        assert abs(float(got) - truth) <= 1e-12 * scale
    else:
        own = abs(float(ref.layer_objective(K, Ky, 2.0)) - truth)
        assert abs(float(got) - truth) <= max(own, np.finfo(np.float32).eps * abs(truth)) + 1e-9 * scale
    K[0, 0] = np.nan
    assert np.isnan(nb.layer_objective(K, Ky, 2.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("by_gemm", (True, False))
def test_gaussian_kernel_either_gram_product(nb, ref, dtype, by_gemm, monkeypatch):
    """GEMM with a copy of vᵀ or SYRK (NumbaBackend.gram_by_gemm): the reference's K, symmetric."""
    monkeypatch.setattr(type(nb), "gram_by_gemm", staticmethod(lambda m, d: by_gemm))
    v = np.random.default_rng(4).standard_normal((40, 12)).astype(dtype)
    K = nb.gaussian_kernel(v, 3.0)
    assert_close(K, ref.gaussian_kernel(v, 3.0), dtype, "K")
    np.testing.assert_allclose(K, K.T, rtol=10 * np.finfo(dtype).eps)


def test_gram_policy_prefers_gemm_for_short_rows(nb):
    assert nb.gram_by_gemm(1024, 32) and nb.gram_by_gemm(256, 128) and nb.gram_by_gemm(1024, 256)
    assert not nb.gram_by_gemm(256, 256) and not nb.gram_by_gemm(256, 1024)


def test_kernel_matrix_properties(nb):
    v = np.random.default_rng(1).standard_normal((30, 7))
    v[3] = v[5]                                  # a duplicated sample: distance exactly 0
    K = nb.gaussian_kernel(v, 2.0)
    assert np.all(np.diag(K) == 1.0) and K[3, 5] == 1.0
    assert np.all((K > 0) & (K <= 1.0))
    np.testing.assert_allclose(K, K.T, rtol=1e-14)


def test_primitives_do_not_modify_inputs(nb):
    x, w, y = data(12, 9, 8, np.float64)
    _, z, fp = nb.forward(x, w, "selu", 0.1)
    zhat, u, v = nb.group_stats(z, 4, 0.2, 1.0)
    K = nb.gaussian_kernel(v, 1.0)
    Ky = nb.label_kernel(y, 3, "cosine", np.float64)
    A = nb.gaussian_weights(K, Ky, 2.0)
    copies = [a.copy() for a in (z, fp, zhat, u, v, K, Ky, A)]
    neg_dv = nb.laplacian(A, v)
    nb.post_grouped(neg_dv, zhat, u, fp, 0.2, 1.0)
    nb.post_plain(z, fp, 1.0)
    nb.divisive_norm(zhat, u, 0.2)
    nb.gaussian_weights(K, Ky, 2.0)
    for a, b in zip((z, fp, zhat, u, v, K, Ky, A), copies):
        np.testing.assert_array_equal(a, b)


def test_bad_activation_names_the_argument(nb):
    x, w, _ = data(4, 3, 2, np.float64)
    with pytest.raises(ValueError, match="activation"):
        nb.forward(x, w, "tanh", 0.1)


# -- the public API --------------------------------------------------------

CASES = list(itertools.product(KERNELS, GROUPINGS, ACTIVATIONS, DTYPES))


@pytest.mark.parametrize("kernel, grouping, activation, dtype", CASES)
def test_public_api_matches_numpy(kernel, grouping, activation, dtype):
    groups, p = grouping
    sigma = 1.0 if groups else 3.0
    for m, n_in, n_out, _ in SHAPES:
        x, w, y = data(m, n_in, n_out, dtype, seed=m)
        rule = dict(kernel=kernel, sigma=sigma, gamma=2.0, activation=activation, slope=0.05,
                    groups=groups, p=p, n_classes=3)
        assert_api_close(tf.local_update, x, w, y, dtype, f"local_update m={m}", **rule)
        lo_got = tf.local_objective(x, w, y, backend="numba", **rule)
        lo_want = tf.local_objective(x, w, y, backend="numpy", **rule)
        assert abs(lo_got - lo_want) <= TOL[dtype] * max(abs(lo_want), 1e-3), (lo_got, lo_want)
        out = dict(activation=activation, slope=0.05, groups=groups, p=p)
        for divisive in ((False, True) if groups else (False,)):
            assert_api_close(tf.layer_output, x, w, None, dtype, f"layer_output divisive={divisive}",
                             divisive=divisive, **out)
        if kernel == "gaussian":
            assert_api_close(tf.third_factor, x, w, y, dtype, "third_factor", **rule)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_label_kernel_and_non_contiguous_inputs(dtype):
    x, w, y = data(20, 12, 8, dtype, seed=5)
    xf, wf = np.asfortranarray(x), w.T.copy().T          # Fortran-ordered inputs
    rule = dict(groups=2, p=0.3, label_kernel="linear", sigma=1.0, n_classes=3)
    got = tf.local_update(xf, wf, y, backend="numba", **rule)
    assert_close(got, tf.local_update(x, w, y, backend="numpy", **rule), dtype, "local_update")


def test_available():
    assert "numba" in tf.available_backends()


def test_multithreaded_passes_agree_bitwise(nb):
    """With parallel_min_size = 0 every pass runs under prange on all threads: same bits."""
    from threefactor.backends.numba import NumbaBackend
    par = NumbaBackend()
    par.parallel_min_size = 0
    x, w, y = data(33, 10, 12, np.float32, seed=3)
    for be_a, be_b in ((nb, par),):
        outs = []
        for be in (be_a, be_b):
            _, z, fp = be.forward(x, w, "selu", 0.1)
            zhat, u, v = be.group_stats(z, 3, 0.2, 1.0)
            K = be.gaussian_kernel(v, 1.0)
            A = be.gaussian_weights(K, be.label_kernel(y, 3, "cosine", np.float32), 2.0)
            post = be.post_grouped(be.laplacian(A, v), zhat, u, fp, 0.2, 1.0)
            outs.append((z, fp, zhat, u, v, K, A, post, be.divisive_norm(zhat, u, 0.2),
                         be.post_plain(z, fp, 0.5)))
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, d", ((30, 7), (7, 30), (16, 16)))
def test_laplacian_both_forms(nb, ref, dtype, m, d):
    """d > m multiplies L_A = diag(A·1) - A; d <= m subtracts A v from diag(A·1) v."""
    rng = np.random.default_rng(m * d)
    v = rng.standard_normal((m, d)).astype(dtype)
    A = rng.standard_normal((m, m))
    A = ((A + A.T) / m ** 2).astype(dtype)
    assert_close(nb.laplacian(A, v), ref.laplacian(A, v), dtype, "L_A v")


def test_small_gemms_run_on_one_blas_thread(monkeypatch):
    """A GEMM below small_gemm_macs switches OpenBLAS to one thread and back; a large one does not."""
    from threefactor.backends.numba import NumbaBackend
    calls, threads = [], [4]

    def get():
        return threads[0]

    def set_(n):
        calls.append(n)
        threads[0] = n

    from threefactor import threads as thread_control
    monkeypatch.setattr(thread_control, "_BLAS_API", [(get, set_)])      # OpenBLAS's C API, as threads.py finds it
    be = NumbaBackend()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    np.testing.assert_array_equal(be.matmul(a, b), a @ b)
    assert calls == [1, 4] and threads == [4]
    be.gaussian_kernel(a, 1.0)
    assert calls == [1, 4, 1, 4]
    monkeypatch.setattr(NumbaBackend, "small_gemm_macs", 8 * 5 * 3)      # now "large"
    be.matmul(a, b)
    assert calls == [1, 4, 1, 4]
    with pytest.raises(ValueError):                                     # restored after an error too
        monkeypatch.setattr(NumbaBackend, "small_gemm_macs", 1 << 22)
        be.matmul(a, rng.standard_normal((4, 3)))
    assert threads == [4] and calls[-2:] == [1, 4]


def test_openblas_thread_api_round_trip():
    from threefactor.bench.machine import openblas_thread_api
    api = openblas_thread_api()
    if api is None:
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    get, set_ = api
    n = get()
    try:
        set_(1)
        assert get() == 1
    finally:
        set_(n)
    assert get() == n


@pytest.mark.parametrize("rows", [1, 2, 3, 16, 64, 65, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_of_few_rows_is_the_product(rows, dtype):
    """NumbaBackend.matmul(x, w.T): a float32 product of 2..few_rows rows is taken as (w xᵀ)ᵀ, a
    C-contiguous array equal to x @ w.T up to float32 rounding; every other case is x @ w.T itself."""
    from threefactor.backends import get_backend
    be = get_backend("numba")
    rng = np.random.default_rng(rows)
    x, w = rng.standard_normal((rows, 300)).astype(dtype), rng.standard_normal((200, 300)).astype(dtype)
    got, want = be.matmul(x, w.T), x @ w.T
    assert got.shape == (rows, 200) and got.dtype == dtype and got.flags.c_contiguous
    exact = dtype == np.float64 or not 1 < rows <= be.few_rows
    if exact:
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    w_t = np.ascontiguousarray(w.T)                # b C-contiguous: no transposed form to exploit
    np.testing.assert_array_equal(be.matmul(x, w_t), x @ w_t)
