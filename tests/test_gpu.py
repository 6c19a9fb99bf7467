"""CupyBackend against the numpy reference: every primitive and the public API, float32 and float64.

Skipped as a whole (with the reason) where CuPy or an NVIDIA GPU is missing.
Block sizes are patched small in some tests so that the strided loops and the
multi-block paths of the raw kernels run on small inputs.
"""
import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install threefactor[gpu])")
try:
    _N_GPUS = cupy.cuda.runtime.getDeviceCount()
except Exception as exc:  # no driver / no device
    pytest.skip(f"CuPy is installed but no GPU is usable: {exc}", allow_module_level=True)
if _N_GPUS < 1:
    pytest.skip("CuPy is installed but no GPU is visible", allow_module_level=True)

import threefactor as tf  # noqa: E402
from threefactor.rule import engine  # noqa: E402
from threefactor.backends import cupy as cupy_backend  # noqa: E402
from threefactor.backends import get_backend  # noqa: E402
from threefactor.backends.numpy import NumpyBackend  # noqa: E402
from threefactor.rule.rules import Rule  # noqa: E402

pytestmark = pytest.mark.gpu
DTYPES = (np.float32, np.float64)
NP, CP = NumpyBackend(), get_backend("cupy")


def close(got, ref, dtype, rtol=None):
    """assert_allclose with a per-dtype tolerance scaled to the reference's magnitude."""
    got = cupy.asnumpy(got) if isinstance(got, cupy.ndarray) else np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    rtol = rtol or (2e-4 if dtype == np.float32 else 1e-10)
    scale = float(np.max(np.abs(ref))) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def data(m, n_in, n_out, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    y = rng.integers(0, 10, m)
    return x, w, y


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cupy_backend, "ROW_THREADS", 32)
    monkeypatch.setattr(cupy_backend, "GROUP_WARPS", 1)


def test_backend_is_registered_and_converts():
    assert "cupy" in tf.available_backends()
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    d = CP.asarray(a)
    assert CP.is_native(d) and not CP.is_native(a) and d.dtype == np.float32
    assert CP.asarray(d) is d
    np.testing.assert_array_equal(CP.to_numpy(d), a)
    CP.synchronize()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["linear", "relu", "lrelu", "selu"])
def test_forward(dtype, activation):
    x, w, _ = data(9, 17, 40, dtype)
    ref = NP.forward(x, w, activation, 0.01)
    got = CP.forward(CP.asarray(x), CP.asarray(w), activation, 0.01)
    for g, r in zip(got, ref):
        close(g, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,groups", [(8, 64, 32), (5, 120, 3), (7, 200, 100), (3, 2048, 16)])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_group_stats_and_divisive_norm(dtype, m, n, groups, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    z = np.random.default_rng(1).standard_normal((m, n)).astype(dtype)
    ref = NP.group_stats(z, groups, 0.2, 1.0)
    got = CP.group_stats(CP.asarray(z), groups, 0.2, 1.0)
    for g, r in zip(got, ref):
        close(g, r, dtype)
    close(CP.divisive_norm(got[0], got[1], 0.2), NP.divisive_norm(ref[0], ref[1], 0.2), dtype)
    mask = NP.keep_select(np.random.default_rng(2), (m, n), 0.3, dtype, ((1.5, 0.0),))[0]
    r = CP.divisive_norm(got[0], got[1], 0.2, CP.asarray(mask))          # dropout in the same kernel
    close(r, NP.divisive_norm(ref[0], ref[1], 0.2, mask), dtype)
    assert np.array_equal(cupy.asnumpy(r) == 0, mask == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["linear", "relu", "lrelu", "selu"])
@pytest.mark.parametrize("m,n,groups", [(8, 64, 32), (5, 120, 3), (3, 2048, 16)])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_forward_grouped_in_one_kernel(dtype, activation, m, n, groups, blocks, request):
    """a, z, f', ẑ, u, v from one GEMM + activate_group_stats + row_centre: numpy's six arrays, and the
    bits of the backend's own forward then group_stats (SELU: within rounding, as the compiler may
    contract its exp-multiply-subtract differently in the two kernels)."""
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    x, w, _ = data(m, 17, n, dtype)
    names = ("a", "z", "fp", "zhat", "u", "v")
    got = CP.forward_grouped(CP.asarray(x), CP.asarray(w), activation, 0.1, groups, 0.2, 1.0)
    for g, r, name in zip(got, NP.forward_grouped(x, w, activation, 0.1, groups, 0.2, 1.0), names):
        close(g, r, dtype)
    a, z, fp = CP.forward(CP.asarray(x), CP.asarray(w), activation, 0.1)
    for g, r, name in zip(got, (a, z, fp) + tuple(CP.group_stats(z, groups, 0.2, 1.0)), names):
        if activation == "selu":
            close(g, cupy.asnumpy(r), dtype, rtol=1e-5 if dtype == np.float32 else 1e-13)
        else:
            assert np.array_equal(cupy.asnumpy(g), cupy.asnumpy(r)), name
    with pytest.raises(ValueError, match="groups=7 does not divide the layer width"):
        CP.forward_grouped(CP.asarray(x), CP.asarray(w), activation, 0.1, 7, 0.2, 1.0)
    with pytest.raises(ValueError, match="activation"):
        CP.forward_grouped(CP.asarray(x), CP.asarray(w), "tanh", 0.1, groups, 0.2, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matrices_weights_and_laplacian(dtype):
    rng = np.random.default_rng(2)
    v = rng.standard_normal((33, 12)).astype(dtype)
    labels = rng.integers(0, 10, 33)
    K = NP.gaussian_kernel(v, 3.0)
    Kc = CP.gaussian_kernel(CP.asarray(v), 3.0)
    close(Kc, K, dtype)
    assert np.all(cupy.asnumpy(cupy.diag(Kc)) == 1)
    for kind in ("cosine", "linear"):
        close(CP.label_kernel(CP.asarray(labels), 10, kind, dtype),
              NP.label_kernel(labels, 10, kind, dtype), dtype)
    Ky = NP.label_kernel(labels, 10, "cosine", dtype)
    A = NP.gaussian_weights(K, Ky, 2.0)
    Ac = CP.gaussian_weights(CP.asarray(K), CP.asarray(Ky), 2.0)
    close(Ac, A, dtype)
    close(CP.laplacian(Ac, CP.asarray(v)), NP.laplacian(A, v), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_post_terms_and_hebbian(dtype, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    rng = np.random.default_rng(3)
    m, n, c = 11, 96, 48
    z, fp = (rng.standard_normal((m, n)).astype(dtype) for _ in range(2))
    neg_dz = rng.standard_normal((m, n)).astype(dtype)
    close(CP.post_plain(CP.asarray(neg_dz), CP.asarray(fp), 0.08), NP.post_plain(neg_dz, fp, 0.08), dtype)
    zhat, u, _ = NP.group_stats(z, c, 0.2, 1.0)
    neg_dv = rng.standard_normal((m, c)).astype(dtype)
    ref = NP.post_grouped(neg_dv, zhat, u, fp, 0.2, 0.08)
    got = CP.post_grouped(*(CP.asarray(a) for a in (neg_dv, zhat, u, fp)), 0.2, 0.08)
    close(got, ref, dtype)
    x = rng.standard_normal((m, 30)).astype(dtype)
    close(CP.hebbian(CP.asarray(ref), CP.asarray(x)), NP.hebbian(ref, x), dtype)


RULES = [Rule(), Rule(groups=8), Rule(kernel="cosine"), Rule(kernel="cosine", groups=8),
         Rule(kernel="linear"), Rule(activation="selu", groups=4, p=0.5),
         Rule(label_kernel="linear", groups=8)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kernel_name}-{r.groups}-{r.activation}-{r.label_kernel}")
def test_engine_local_step_matches_numpy(dtype, rule):
    x, w, y = data(24, 20, 32, dtype)
    divisive = rule.grouped
    out, (dw,), lp = engine.local_step(rule, x, w, y, 10, NP, divisive=divisive)
    outc, (dwc,), lpc = engine.local_step(rule, CP.asarray(x), CP.asarray(w), CP.asarray(y), 10, CP,
                                       divisive=divisive)
    close(dwc, dw, dtype, rtol=1e-3 if dtype == np.float32 else None)
    close(outc, out, dtype)
    assert lpc.objective() == pytest.approx(lp.objective(), rel=1e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [None, 8])
def test_public_api_matches_numpy(dtype, groups):
    x, w, y = data(16, 12, 32, dtype)
    kw = dict(groups=groups, n_classes=10)
    rtol = 1e-3 if dtype == np.float32 else None
    ref = tf.local_update(x, w, y, **kw)
    got = tf.local_update(x, w, y, backend="cupy", **kw)            # host in, host out
    assert isinstance(got, np.ndarray)
    close(got, ref, dtype, rtol)
    dev = tf.local_update(cupy.asarray(x), cupy.asarray(w), cupy.asarray(y), backend="cupy", **kw)
    assert isinstance(dev, cupy.ndarray)                             # device in, device out
    close(dev, ref, dtype, rtol)
    assert tf.local_objective(x, w, y, backend="cupy", **kw) == pytest.approx(
        tf.local_objective(x, w, y, **kw), rel=1e-3 if dtype == np.float32 else 1e-9)
    close(tf.third_factor(x, w, y, backend="cupy", **kw), tf.third_factor(x, w, y, **kw), dtype, rtol)
    close(tf.layer_output(x, w, groups=groups, divisive=groups is not None, backend="cupy"),
          tf.layer_output(x, w, groups=groups, divisive=groups is not None), dtype)


@pytest.mark.parametrize("form", ["int", "float", "onehot"])
def test_a_public_call_on_device_labels_synchronises_once(form):
    """With the class count known (n_classes, or one-hot columns) the labels' checks are flags read back
    with the finiteness flag of a = x wᵀ, after the update is queued: one synchronisation per call.
    Counted on the CuPy emulator (a real GPU has no counter; the bad-input tests run there too)."""
    if not hasattr(cupy, "sync_count"):
        pytest.skip("synchronisations are counted on the CuPy emulator only")
    x, w, y = data(16, 12, 32, np.float32)
    lab = {"int": y, "float": y.astype(np.float32), "onehot": np.eye(10, dtype=np.float32)[y]}[form]
    args = (cupy.asarray(x), cupy.asarray(w), cupy.asarray(lab))
    for fn in (tf.local_update, tf.local_objective, tf.third_factor):
        fn(*args, backend="cupy", n_classes=10)
        n = cupy.sync_count()
        fn(*args, backend="cupy", n_classes=10, groups=8)
        log = cupy.sync_log(n)
        assert len(log) == (2 if fn is tf.local_objective else 1), (fn.__name__, log)   # objective: + its float
    if form != "onehot":                    # without n_classes the class count is read first: one more
        tf.local_update(*args, backend="cupy")
        n = cupy.sync_count()
        tf.local_update(*args, backend="cupy")
        assert len(cupy.sync_log(n)) == 2


@pytest.mark.parametrize("form", ["int", "float", "onehot", "bool-onehot"])
@pytest.mark.parametrize("where", ["host", "device"])
def test_labels_of_every_form_from_host_or_device(form, where):
    """Labels are checked where they live: host labels (integers, whole floats, one-hot) given with device
    or host x reach the same update as device labels (a host min/max once went into cupy.stack)."""
    x, w, y = data(16, 12, 32, np.float64)
    ref = tf.local_update(x, w, y, n_classes=10)
    lab = {"int": y, "float": y.astype(np.float32), "onehot": np.eye(10)[y],
           "bool-onehot": np.eye(10, dtype=bool)[y]}[form]
    lab = cupy.asarray(lab) if where == "device" else lab
    close(tf.local_update(cupy.asarray(x), cupy.asarray(w), lab, backend="cupy", n_classes=10), ref, np.float64)
    close(tf.local_update(x, w, lab, backend="cupy", n_classes=10), ref, np.float64)
    bad = lab.astype(np.float32) + 0.5 if form in ("int", "float") else None
    if bad is not None:
        with pytest.raises(ValueError, match="whole numbers"):
            tf.local_update(x, w, bad, backend="cupy", n_classes=10)
        with pytest.raises(ValueError, match=">= 0"):
            tf.local_update(x, w, lab - 20, backend="cupy", n_classes=10)
        nan = lab.astype(np.float32)
        nan[0] = np.nan
        with pytest.raises(ValueError, match="y contains NaN"):
            tf.local_update(x, w, nan, backend="cupy", n_classes=10)


_SPIN = r"""
extern "C" __global__ void spin(const long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


@pytest.mark.parametrize("rule", [Rule(), Rule(groups=8)], ids=["plain", "grp+div"])
def test_an_update_never_synchronises(rule):
    """Queue ~0.5 s of GPU spinning, then run an update: any host sync inside would wait for it."""
    import time

    spin = cupy.RawKernel(_SPIN, "spin")
    x, w, y = (CP.asarray(a) for a in data(64, 32, 64, np.float32))
    engine.local_step(rule, x, w, y, 10, CP, divisive=rule.grouped)   # compile and warm the pool
    spin((1,), (1,), (np.int64(1),))
    CP.synchronize()
    spin((1,), (1,), (np.int64(10 ** 9),))                            # 0.5 s at 2 GHz, 1 s at 1 GHz
    t = time.perf_counter()
    out, (dw,), _ = engine.local_step(rule, x, w, y, 10, CP, divisive=rule.grouped)
    elapsed = time.perf_counter() - t
    busy = not cupy.cuda.get_current_stream().done
    CP.synchronize()
    # a host synchronisation inside would have waited for the spin: the stream would be idle now (a time
    # limit is not the test: on a loaded machine the emulated update alone can take a quarter second)
    assert busy, f"the update waited for the device ({elapsed:.3f} s): it synchronised"



def _nets():
    from threefactor.nn.convnet import ConvNet
    from threefactor.nn.mlp import MLP
    mlp = lambda rng: MLP(64, [32, 32], 10, Rule(groups=4), divisive=True, dropout=0.1, backend=CP, rng=rng)
    conv = lambda rng: ConvNet((2, 8, 8), "conv4-pool-conv8-pool-fc16", 10, Rule(activation="selu", groups=2),
                               divisive=True, dropout=0.2, backend=CP, rng=rng)
    return {"mlp": (mlp, (32, 64)), "conv-selu-alpha-dropout": (conv, (16, 2, 8, 8))}


@pytest.mark.parametrize("name", ["mlp", "conv-selu-alpha-dropout"])
def test_a_training_step_stays_on_the_device(name):
    """A whole train_step (dropout masks made on the device, local updates, SGD) queues its work
    without waiting for the GPU, and repeats bit for bit from the same seed."""
    import time

    build, shape = _nets()[name]
    rng = np.random.default_rng(0)
    x, y = CP.asarray(rng.standard_normal(shape).astype(np.float32)), CP.asarray(rng.integers(0, 10, shape[0]))
    runs = []
    for _ in range(2):
        net_rng = np.random.default_rng(1)
        net = build(net_rng)
        opts = net.make_optimizers(0.01, 0.01)
        net.train_step(x, y, opts, net_rng)                               # compile, warm the pool
        spin = cupy.RawKernel(_SPIN, "spin")
        spin((1,), (1,), (np.int64(1),))
        CP.synchronize()
        spin((1,), (1,), (np.int64(10 ** 9),))
        t = time.perf_counter()
        stats = net.train_step(x, y, opts, net_rng)
        elapsed = time.perf_counter() - t
        busy = not cupy.cuda.get_current_stream().done
        CP.synchronize()
        assert busy, f"train_step waited for the device ({elapsed:.3f} s): it synchronised"
        assert np.isfinite(float(stats.loss))
        runs.append({k: CP.to_numpy(v) for k, v in net.parameters().items()})
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)

def test_bench_case_runs_on_the_gpu():
    from threefactor.bench import suite as bench

    r = bench.bench_case("cupy", 16, 32, 64, "gauss-grp+div", np.float32,
                         {"budget": 0.01, "min_repeats": 2, "warmup": 1})
    assert r["backend"] == "cupy" and r["update_s"] > 0 and r["peak_mem_bytes"] >= 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [37, 128])
@pytest.mark.parametrize("threads,per_thread", [(512, 8), (32, 4), (32, 1), (64, 10 ** 6)])
def test_layer_objective_in_one_kernel(dtype, m, threads, per_thread, monkeypatch):
    """One launch of ``kernel_stats`` gives objective.layer_objective's value (Eq. 9), as a 0-d device
    array, on one block or many (the last block sums the others' partials); the same bits on every call
    (so the ticket counter is reset) and the same bits as the backend's kernel means."""
    monkeypatch.setattr(cupy_backend, "OBJECTIVE_THREADS", threads)
    monkeypatch.setattr(cupy_backend, "OBJECTIVE_PER_THREAD", per_thread)
    rng = np.random.default_rng(m)
    v = rng.standard_normal((m, 6)).astype(dtype)
    K, Ky = NP.gaussian_kernel(v, 2.0), NP.label_kernel(rng.integers(0, 4, m), 4, "cosine", dtype)
    ref = NP.layer_objective(K, Ky, 2.0)
    gK, gKy = CP.asarray(K), CP.asarray(Ky)
    got = CP.layer_objective(gK, gKy, 2.0)
    assert isinstance(got, cupy.ndarray) and got.shape == () and got.dtype == dtype
    close(got, np.asarray(ref, dtype=dtype), dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)
    again = [cupy.asnumpy(CP.layer_objective(gK, gKy, 2.0)) for _ in range(3)]
    assert all(a.tobytes() == cupy.asnumpy(got).tobytes() for a in again)
    stats = cupy.asnumpy(CP._kernel_stats(gK, gKy, 2.0))
    close(stats[:2], np.array([K.mean(), Ky.mean()], dtype=dtype), dtype,
          rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_kernel_stats_on_two_streams():
    """Each stream has its own ticket counter: interleaved launches on two streams give the same values."""
    rng = np.random.default_rng(5)
    K = NP.gaussian_kernel(rng.standard_normal((300, 6)).astype(np.float64), 2.0)
    Ky = NP.label_kernel(rng.integers(0, 4, 300), 4, "cosine", np.float64)
    gK, gKy = CP.asarray(K), CP.asarray(Ky)
    ref = cupy.asnumpy(CP._kernel_stats(gK, gKy, 2.0))
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]
    outs = []
    for _ in range(3):
        for st in streams:
            with st:
                outs.append(CP._kernel_stats(gK, gKy, 2.0))
    for st in streams:
        st.synchronize()
    assert all(np.array_equal(cupy.asnumpy(o), ref) for o in outs)


def test_kernel_stats_block_count():
    """m = 256 on 16 blocks, m = 1024 on 256, never more than the cap nor fewer than one."""
    assert cupy_backend._objective_blocks(1) == 1
    assert cupy_backend._objective_blocks(256 ** 2) == 16
    assert cupy_backend._objective_blocks(1024 ** 2) == 256
    assert cupy_backend._objective_blocks(10 ** 9) == cupy_backend.OBJECTIVE_BLOCKS_MAX


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_on_the_gpu_is_one_kernel_with_numpys_arithmetic(dtype):
    from threefactor.nn.optim import SGD
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((5, 7)).astype(dtype)
    grads = [rng.standard_normal((5, 7)).astype(dtype) for _ in range(3)]
    ref, gpu = SGD([w0.copy()], lr=0.1, weight_decay=1e-3), SGD([cupy.asarray(w0)], lr=0.1, weight_decay=1e-3)
    for sign, g in zip((1.0, -1.0, -1.0), grads):
        ref.step([g], sign=sign)
        gpu.step([cupy.asarray(g)], sign=sign)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    close(gpu.params[0], ref.params[0], dtype, rtol=rtol)
    close(gpu.buffers[0], ref.buffers[0], dtype, rtol=rtol)
    strided = SGD([cupy.asarray(w0).T], lr=0.1)            # not contiguous: the generic in-place path
    strided.step([cupy.asarray(grads[0]).T])
    close(strided.params[0], (w0 - 0.1 * grads[0]).T, dtype, rtol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", [(1, 3), (7, 10), (300, 10), (600, 4)])
def test_softmax_cross_entropy_in_one_kernel(dtype, m, k):
    """The output layer's loss, gradient and hit count on the GPU = layers.softmax_cross_entropy on numpy
    (rows of equal logits included: the first maximum wins, as numpy's argmax)."""
    from threefactor.nn.layers import softmax_cross_entropy
    rng = np.random.default_rng(m)
    logits = (3 * rng.standard_normal((m, k))).astype(dtype)
    logits[::5] = 0.5                                           # ties: argmax is the first class
    labels = rng.integers(0, k, m)
    loss, d, correct = softmax_cross_entropy(logits, labels, np)
    g_loss, g_d, g_correct = softmax_cross_entropy(cupy.asarray(logits), cupy.asarray(labels), cupy)
    assert isinstance(g_d, cupy.ndarray) and g_loss.shape == () and g_loss.dtype == dtype
    close(g_loss, np.asarray(loss), dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)
    close(g_d, d, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert int(g_correct) == int(correct)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("one_block", [True, False])
def test_gaussian_weights_means_from_one_or_many_blocks(dtype, one_block, monkeypatch):
    if not one_block:
        monkeypatch.setattr(cupy_backend, "OBJECTIVE_PER_THREAD", 1)
        monkeypatch.setattr(cupy_backend, "OBJECTIVE_THREADS", 32)
    rng = np.random.default_rng(9)
    K = NP.gaussian_kernel(rng.standard_normal((45, 5)).astype(dtype), 1.5)
    Ky = NP.label_kernel(rng.integers(0, 3, 45), 3, "cosine", dtype)
    assert (cupy_backend._objective_blocks(K.size) == 1) == one_block
    close(CP.gaussian_weights(CP.asarray(K), CP.asarray(Ky), 2.0), NP.gaussian_weights(K, Ky, 2.0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_syrk", [True, False])
def test_gaussian_kernel_from_one_triangle_of_the_gram_matrix(dtype, use_syrk, monkeypatch):
    """SYRK writes one triangle of v vᵀ (the other is left unwritten: poison on the emulator); the
    kernel reads only that one, so K is exactly symmetric either way."""
    monkeypatch.setattr(CP, "use_syrk", use_syrk)
    v = np.random.default_rng(4).standard_normal((41, 9)).astype(dtype)
    G = cupy.asnumpy(CP.gram_lower(CP.asarray(v)))
    low = np.tril_indices(41)
    close(G[low], (v @ v.T)[low], dtype)
    K = cupy.asnumpy(CP.gaussian_kernel(CP.asarray(v), 2.5))
    assert np.array_equal(K, K.T) and np.all(np.diag(K) == 1)
    close(K, NP.gaussian_kernel(v, 2.5), dtype)


@pytest.mark.parametrize("fn", ["local_update", "local_objective", "third_factor"])
def test_public_api_reports_bad_input_on_the_gpu(fn):
    """The device path checks finiteness after queuing its work (one read-back) and still names the cause."""
    x, w, y = data(6, 5, 8, np.float32)
    call = getattr(tf, fn)
    for bad, name in ((x, "x"), (w, "w")):
        b = bad.copy()
        b[1, 2] = np.nan
        args = (b, w) if name == "x" else (x, b)
        with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
            call(cupy.asarray(args[0]), cupy.asarray(args[1]), cupy.asarray(y), backend="cupy", n_classes=10)
    with pytest.raises(ValueError, match=">= 0"):
        call(cupy.asarray(x), cupy.asarray(w), cupy.asarray(y - 20), backend="cupy", n_classes=10)
    with pytest.raises(ValueError, match="out of range"):
        call(cupy.asarray(x), cupy.asarray(w), cupy.asarray(y + 10), backend="cupy", n_classes=10)
    ok = call(cupy.asarray(x), cupy.asarray(w), cupy.asarray(y), backend="cupy", n_classes=10)
    ref = getattr(tf, fn)(x, w, y, backend="numpy", n_classes=10)
    close(ok if fn != "local_objective" else np.asarray(ok, dtype=np.float32), np.asarray(ref, dtype=np.float32),
          np.float32)


def test_scalars_read_back_at_once():
    vals = [cupy.asarray(np.float32(1.5)), cupy.asarray(np.int64(7)), cupy.asarray(2.25)]
    got = CP.scalars(vals)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.5, 7.0, 2.25])
    np.testing.assert_array_equal(got, NP.scalars([np.float32(1.5), np.int64(7), 2.25]))
    assert CP.scalars([]).shape == NP.scalars([]).shape == (0,)
