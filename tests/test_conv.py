"""Conv layers against their definitions: every kernel × grouping × pooling × backend × dtype.

References, all float64: complex-step derivatives of the literal objective
(explicit conv loops, window-by-window max pool, pair sums of pHSIC:
``verify.naive.conv_objective``), the literal pair sums of Eq. 12 / 22 summed over
positions (``verify.naive.conv_update``), and the numpy GEMM path.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from threefactor import layer_output, local_objective, local_update
from threefactor.rule import conv
from threefactor.verify import naive
from threefactor.verify import naive as pairwise
from threefactor import third_factor
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.verify.gradcheck import check_conv_rule, complex_step_gradient, relative_error
from threefactor.verify.variants import conv_variants
from threefactor.rule.rules import ACTIVATIONS, KERNELS, Rule

# the functional-API cases omit n_classes for brevity (labels 0..2 of a 3-class problem)
pytestmark = pytest.mark.filterwarnings("ignore:n_classes not given:UserWarning")

N_CLASSES = 3
LABELS = np.array([0, 1, 2, 0])
#: grouping name -> (groups, p, divisive, activation)
GROUPINGS = {"plain": (None, 0.2, False, "selu"), "grp": (3, 0.5, False, "lrelu"),
             "grp+div": (3, 0.2, True, "selu")}
POOLS = (None, "max")
TOL = {np.float64: 1e-12, np.float32: 1e-3}


def backends():
    names = ["numpy", "numba"]
    out = []
    for name in names:
        try:
            get_backend(name)
        except (BackendUnavailable, ImportError):
            out.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{name} unavailable")))
            continue
        out.append(name)
    return out


def problem(m=4, c_in=2, hw=4, c_out=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, c_in, hw, hw))
    w = rng.normal(size=(c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
    return x, w


def rule_of(kernel, grouping):
    groups, p, _, act = GROUPINGS[grouping]
    return Rule(kernel=kernel, groups=groups, p=p, activation=act)


def kwargs_of(rule, pool):
    return dict(kernel=rule.kernel, sigma=rule.sigma, gamma=rule.gamma, activation=rule.activation,
                slope=rule.slope, groups=rule.groups, p=rule.p, delta=rule.delta,
                label_kernel=rule.label_kernel, n_classes=N_CLASSES, pool=pool)


# -- array operations against the naive loops ----------------------------------------

@pytest.mark.parametrize("shape", [(3, 2, 5, 4, 4, 3, 3, 1), (2, 3, 6, 6, 5, 3, 3, 0),
                                   (2, 1, 4, 7, 2, 1, 1, 0), (1, 2, 3, 3, 3, 2, 3, 2)], ids=str)
def test_conv2d_is_the_loop(shape):
    m, c, h, wd, o, kh, kw, pad = shape
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(m, c, h, wd)), rng.normal(size=(o, c, kh, kw))
    a = conv.conv2d(x, w, pad)
    assert a.shape == (m, o) + conv.conv_out_size(h, wd, kh, kw, pad)
    np.testing.assert_allclose(a, naive.conv2d(x, w, pad), rtol=1e-12, atol=1e-12)
    # col2im is the adjoint of im2col: <im2col(x), C> = <x, col2im(C)>
    cols = conv.im2col(x, kh, kw, pad)
    C = rng.normal(size=cols.shape)
    assert np.isclose((cols * C).sum(), (x * conv.col2im(C, x.shape, kh, kw, pad)).sum(), rtol=1e-12)
    assert np.array_equal(conv.cols_to_weights(conv.weights_to_cols(w), w.shape), w)


@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (2, 3)])
def test_max_pool_is_the_loop(hw):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3) + hw)
    pooled, idx = conv.max_pool2x2(z)
    ref, (wy, wx) = naive.max_pool2x2(z)
    np.testing.assert_array_equal(pooled, ref)
    h2, w2 = hw[0] // 2, hw[1] // 2
    py, px = np.meshgrid(np.arange(h2), np.arange(w2), indexing="ij")
    np.testing.assert_array_equal(2 * py + idx // 2, wy)
    np.testing.assert_array_equal(2 * px + idx % 2, wx)
    # routing is the adjoint of gathering, and puts g only at the winners
    g = rng.normal(size=pooled.shape)
    routed = conv.pool_route(g, idx, z.shape)
    assert np.isclose((routed * z).sum(), (g * conv.pool_gather(z, idx)).sum(), rtol=1e-12)
    assert np.count_nonzero(routed) == g.size
    np.testing.assert_array_equal(conv.pool_gather(z, idx), pooled)


def test_max_pool_ties_pick_the_first():
    z = np.zeros((1, 1, 2, 2))
    _, idx = conv.max_pool2x2(z)
    assert idx[0, 0, 0, 0] == 0


# -- the rule against complex-step derivatives and the literal pair sums -------------

@functools.lru_cache(maxsize=None)
def references(kernel, grouping, pool, dtype=np.float64):
    """(x, w, {complex, naive (Gaussian), numpy64}) in float64 at the tiny problem's point rounded to dtype."""
    rule = rule_of(kernel, grouping)
    x, w = (a.astype(dtype).astype(np.float64) for a in problem())
    refs = {"complex": complex_step_gradient(
        lambda v: naive.conv_objective(x, v, LABELS, N_CLASSES, rule, 1, pool), w)}
    if kernel == "gaussian":
        refs["naive"] = naive.conv_update(x, w, LABELS, N_CLASSES, rule, 1, pool)
    refs["numpy64"] = local_update(x, w, LABELS, **kwargs_of(rule, pool))
    return x, w, refs


#: max|ΔW - ref| / max|ref| allowed, per dtype of the explicit update and reference.
REF_TOL = {np.float64: {"complex": 1e-10, "naive": 1e-10, "numpy64": 1e-12},
           np.float32: {"complex": 1e-3, "naive": 1e-3, "numpy64": 1e-3}}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("grouping", list(GROUPINGS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_update_is_minus_gradient(kernel, grouping, pool, backend, dtype):
    """ΔW of each backend and dtype vs complex-step -dL/dW, the literal pair sums and numpy float64."""
    x, w, refs = references(kernel, grouping, pool, dtype)
    rule = rule_of(kernel, grouping)
    assert np.abs(refs["complex"]).max() > 1e-8, "the test point has a vanishing gradient"
    dw = local_update(x.astype(dtype), w.astype(dtype), LABELS, backend=backend, **kwargs_of(rule, pool))
    assert isinstance(dw, np.ndarray) and dw.dtype == dtype and dw.shape == w.shape
    for method, ref in refs.items():
        err, worst = relative_error(dw.reshape(len(dw), -1), ref.reshape(len(dw), -1))
        assert err <= REF_TOL[dtype][method], \
            f"{kernel}/{grouping}/pool={pool} {backend} {np.dtype(dtype).name} vs {method}: {err:.2e} at {worst}"
    L = local_objective(x, w, LABELS, backend=backend, **kwargs_of(rule, pool))
    assert abs(L - naive.conv_objective(x, w, LABELS, N_CLASSES, rule, 1, pool)) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("grouping", list(GROUPINGS))
def test_backends_match_numpy_on_a_larger_layer(grouping, pool, backend, dtype):
    """A larger layer (m=5, 6×6, odd pooled size 3×3) in each dtype: update and output vs numpy float64."""
    rule = rule_of("gaussian", grouping)
    x, w = problem(m=5, hw=6, c_out=6, seed=3)
    labels = np.array([0, 1, 2, 0, 1])
    x, w = x.astype(dtype), w.astype(dtype)
    ref = local_update(x.astype(np.float64), w.astype(np.float64), labels, **kwargs_of(rule, pool))
    dw = local_update(x, w, labels, backend=backend, **kwargs_of(rule, pool))
    assert dw.dtype == dtype
    err, worst = relative_error(dw.reshape(len(dw), -1), ref.reshape(len(dw), -1))
    assert err <= TOL[dtype], f"{backend} {np.dtype(dtype).name}: {err:.2e} at {worst}"
    r = layer_output(x, w, activation=rule.activation, groups=rule.groups, p=rule.p,
                     divisive=GROUPINGS[grouping][2], backend=backend, pool=pool)
    r64 = layer_output(x.astype(np.float64), w.astype(np.float64), activation=rule.activation,
                       groups=rule.groups, p=rule.p, divisive=GROUPINGS[grouping][2], pool=pool)
    assert r.dtype == dtype
    np.testing.assert_allclose(r, r64, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_and_padding(activation):
    """Every activation, padding 0 and 2, a 2×2 kernel: the pair sums and complex step agree."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 2, 5, 5))
    w = rng.normal(size=(4, 2, 2, 2)) / 3
    for padding, groups, pool in ((0, 2, "max"), (2, None, None)):
        rule = Rule(activation=activation, groups=groups, sigma=3.0)
        kw = dict(activation=activation, groups=groups, sigma=3.0, padding=padding, pool=pool,
                  n_classes=N_CLASSES)
        dw = local_update(x, w, LABELS, **kw)
        ref = naive.conv_update(x, w, LABELS, N_CLASSES, rule, padding, pool)
        assert relative_error(dw.reshape(4, -1), ref.reshape(4, -1))[0] <= 1e-10
        v = rng.normal(size=w.shape)      # a random direction: d/dt L(w + t v) by the complex step
        t = 1e-30
        dL = naive.conv_objective(x, w + 1j * t * v, LABELS, N_CLASSES, rule, padding, pool).imag / t
        assert np.isclose(-(dw * v).sum(), dL, rtol=1e-9, atol=1e-14)


def test_outputs_and_third_factor():
    """layer_output and third_factor of a conv layer are the dense ones on the flattened activity."""
    x, w = problem(hw=5, c_out=6)
    for pool in POOLS:
        rule = Rule(groups=3, activation="selu")
        z, _, _ = naive.conv_activity(x, w, rule, 1, pool)
        zf = z.reshape(len(z), -1)
        eye = np.eye(zf.shape[1])
        lin = rule.with_(activation="linear")
        out = layer_output(x, w, activation="selu", pool=pool)
        np.testing.assert_allclose(out, z, rtol=1e-12, atol=1e-12)
        _, _, zhat, u, _ = pairwise.representation(zf, eye, lin)
        r = zhat / np.repeat(u ** rule.p, zf.shape[1] // 3, axis=1)
        out = layer_output(x, w, activation="selu", groups=3, divisive=True, pool=pool)
        assert out.shape == z.shape
        np.testing.assert_allclose(out.reshape(len(z), -1), r, rtol=1e-12, atol=1e-12)
        for groups in (None, 3):
            M = third_factor(x, w, LABELS, activation="selu", groups=groups, pool=pool, n_classes=3)
            ref = pairwise.third_factor(zf, eye, LABELS, N_CLASSES, lin.with_(groups=groups))
            np.testing.assert_allclose(M, ref, rtol=1e-10, atol=1e-14)


def test_float32_in_float32_out_and_no_input_change():
    x, w = problem()
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    x0, w0 = x32.copy(), w32.copy()
    dw = local_update(x32, w32, LABELS, groups=3, pool="max")
    assert dw.dtype == np.float32
    assert np.array_equal(x32, x0) and np.array_equal(w32, w0)


# -- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("bad, err, match", [
    (dict(x=np.zeros((4, 2, 4))), ValueError, "must be 4-D"),
    (dict(w=np.zeros((6, 3, 3, 3))), ValueError, "C_in=2"),
    (dict(groups=4), ValueError, "does not divide the number of output channels C_out=6"),
    (dict(pool="avg"), ValueError, "pool='avg' is not one of"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(padding=True), TypeError, "padding must be an int"),
    (dict(padding=1.0), TypeError, "padding must be an int"),
    (dict(w=np.zeros((6, 2, 7, 7))), ValueError, "does not fit"),
    (dict(x=np.zeros((4, 2, 1, 1)), pool="max"), ValueError, "at least 2x2"),
    (dict(x=np.zeros((1, 2, 4, 4)), y=np.array([0])), ValueError, "at least m=2"),
    (dict(y=np.array([0, 1, 2])), ValueError, "3 rows"),
    (dict(x=np.full((4, 2, 4, 4), np.nan)), ValueError, "x contains NaN"),
    (dict(y=None), TypeError, "y is required"),
])
def test_bad_input(bad, err, match):
    x, w = problem()
    kw = dict(x=x, w=w, y=LABELS)
    kw.update({k: v for k, v in bad.items() if k in kw})
    opts = {k: v for k, v in bad.items() if k not in kw}
    with pytest.raises(err, match=match):
        local_update(kw["x"], kw["w"], kw["y"], **opts)


def test_pool_needs_a_conv_layer():
    with pytest.raises(ValueError, match="needs a conv layer"):
        local_update(np.zeros((4, 3)), np.zeros((2, 3)), LABELS, pool="max")


# -- GPU (CuPy) --------------------------------------------------------------------

def _cupy():
    try:
        get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(f"cupy backend unavailable: {exc}")
    import cupy
    return cupy


def _gpu_pool2x2(z):
    """2x2 max pooling of (m, C, H, W) by the cupy backend's primitive (channel-last inside)."""
    pooled, idx, _ = get_backend("cupy").max_pool_rows(z.transpose(0, 2, 3, 1))
    return pooled.transpose(0, 3, 1, 2), idx.transpose(0, 3, 1, 2)


def _gpu_gather(t, z):
    """t (m, C, H, W) at the winners of z's 2x2 windows, by the cupy backend's primitive."""
    _, _, (out,) = get_backend("cupy").max_pool_rows(z.transpose(0, 2, 3, 1), t.transpose(0, 2, 3, 1))
    return out.transpose(0, 3, 1, 2)


def _gpu_route(g, idx, shape):
    m, c, h, w = shape
    out = get_backend("cupy").route_rows(g.transpose(0, 2, 3, 1), idx.transpose(0, 2, 3, 1), (m, h, w, c))
    return out.transpose(0, 3, 1, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("all_offsets", [False, True])
def test_cupy_kernels_match_numpy(dtype, all_offsets, monkeypatch):
    cp = _cupy()
    from threefactor.backends import _conv_cupy
    monkeypatch.setattr(_conv_cupy, "IM2COL_ALL_OFFSETS", all_offsets)
    rng = np.random.default_rng(5)
    # the last shape spans several 32x32 tiles of the tiled kernels, with partial tiles in both axes
    for (m, c, h, wd, kh, kw, pad) in ((3, 2, 5, 6, 3, 3, 1), (2, 5, 8, 8, 3, 3, 0), (2, 3, 7, 5, 2, 1, 2),
                                       (2, 37, 7, 9, 3, 2, 1)):
        x = rng.normal(size=(m, c, h, wd)).astype(dtype)
        cols = conv.im2col(x, kh, kw, pad)
        np.testing.assert_array_equal(cp.asnumpy(get_backend("cupy").im2col(cp.asarray(x), kh, kw, pad)), cols)
        C = rng.normal(size=cols.shape).astype(dtype)
        np.testing.assert_allclose(cp.asnumpy(get_backend("cupy").col2im(cp.asarray(C), x.shape, kh, kw, pad)),
                                   conv.col2im(C, x.shape, kh, kw, pad), rtol=1e-5, atol=1e-5)
        pooled, idx = conv.max_pool2x2(x)
        gp, gi = _gpu_pool2x2(cp.asarray(x))
        np.testing.assert_array_equal(cp.asnumpy(gp), pooled)
        np.testing.assert_array_equal(cp.asnumpy(gi), idx)
        g = rng.normal(size=pooled.shape).astype(dtype)
        np.testing.assert_array_equal(cp.asnumpy(_gpu_route(cp.asarray(g), gi, x.shape)),
                                      conv.pool_route(g, idx, x.shape))
        t = rng.normal(size=x.shape).astype(dtype)
        np.testing.assert_array_equal(cp.asnumpy(_gpu_gather(cp.asarray(t), cp.asarray(x))),
                                      conv.pool_gather(t, idx))
        rows = rng.normal(size=(m * h * wd, c)).astype(dtype)     # channel-last rows, as the GEMM writes
        for r in (rows, rows.reshape(m, h, wd, c)):
            got = get_backend("cupy").rows_to_nchw(cp.asarray(r), m, h, wd)
            assert got.flags.c_contiguous and got.shape == (m, c, h, wd)
            np.testing.assert_array_equal(cp.asnumpy(got), conv.rows_to_nchw(r, m, h, wd))


@pytest.mark.gpu
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("grouping", list(GROUPINGS))
@pytest.mark.parametrize("kernel", KERNELS)
def test_cupy_update_matches_reference(kernel, grouping, pool):
    cp = _cupy()
    x, w, refs = references(kernel, grouping, pool)
    rule = rule_of(kernel, grouping)
    for dtype in (np.float64, np.float32):
        dw = local_update(cp.asarray(x, dtype=dtype), cp.asarray(w, dtype=dtype), LABELS,
                          backend="cupy", **kwargs_of(rule, pool))
        assert isinstance(dw, cp.ndarray) and dw.dtype == dtype
        ref = refs["numpy64"] if dtype == np.float64 else local_update(
            x.astype(dtype).astype(np.float64), w.astype(dtype).astype(np.float64), LABELS,
            **kwargs_of(rule, pool))
        err, worst = relative_error(cp.asnumpy(dw).reshape(len(w), -1), ref.reshape(len(w), -1))
        assert err <= (1e-10 if dtype == np.float64 else 1e-3), f"cupy {dtype}: {err:.2e} at {worst}"


# -- networks (conv_layers) ----------------------------------------------------------

from threefactor.nn.convnet import ARCHS, TABLE6, ConvNet, alpha_dropout, parse_arch, table6_preset
from threefactor.training.build import build_convnet


def test_parse_arch():
    assert parse_arch("vgg") == [("conv", 128, None), ("conv", 256, "max"), ("conv", 512, "max"),
                                 ("conv", 512, "max"), ("fc", 1024)]
    assert parse_arch("vgg", width=2)[-2:] == [("conv", 1024, "max"), ("fc", 1024)]
    assert parse_arch(ARCHS["small"]) == parse_arch("small")
    for bad, match in (("conv8-pool-pool", "must follow a conv"), ("fc8-conv8", "before fc"),
                       ("conv8-relu", "bad block"), ("", "bad block")):
        with pytest.raises(ValueError, match=match):
            parse_arch(bad)
    with pytest.raises(ValueError, match="width"):
        parse_arch("vgg", width=0)


def test_alpha_dropout_keeps_selu_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1000)).astype(np.float32)
    mult, add = alpha_dropout(get_backend("numpy"), rng, x.shape, 0.2, np.float32)
    y = x * mult + add
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.02
    assert np.isclose((mult == 0).mean(), 0.2, atol=0.01)
    assert alpha_dropout(get_backend("numpy"), rng, x.shape, 0.0) == (None, None)


def test_table6_presets():
    cfg = table6_preset("cifar10-vgg-gaussian-grpdiv")
    assert (cfg["lr_out"], cfg["lr_local"], cfg["groups"], cfg["p"]) == (1e-4, 0.4, 64, 0.2)
    assert cfg["milestones"] == (300, 350, 450, 475) and cfg["epochs"] == 500
    bp = table6_preset("cifar10-vgg-backprop")
    assert bp["milestones"] == (100, 200, 250, 275) and bp["lr_out"] == 5e-3
    assert table6_preset("cifar10-vgg-backprop-grpdiv")["lr_out"] == 6e-3
    assert table6_preset("cifar10-vgg-cossim-grpdiv")[("lr_local")] == 0.5
    assert all(table6_preset(n)["batch_size"] == 128 for n in TABLE6)
    with pytest.raises(ValueError, match="preset"):
        table6_preset("cifar10-vgg-nope")


@pytest.mark.parametrize("activation, divisive", [("selu", True), ("lrelu", False)])
def test_convnet_backprop_is_the_gradient(activation, divisive):
    """Hand-written backprop through conv, pool, divisive norm, alpha dropout vs central differences."""
    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    net = ConvNet((2, 6, 6), "conv4-pool-conv4-pool-fc6", 3, Rule(activation=activation, groups=2),
                  divisive=divisive, learning="backprop", dropout=0.2, backend=be, dtype=np.float64, rng=rng)
    x, y = rng.normal(size=(5, 2, 6, 6)), np.array([0, 1, 2, 0, 1])
    drops = net._drops(rng, 5)
    _, _, hidden, out = net.forward_backward(x, y, drops)
    grads = dict(zip(net.parameters(), [g for gs in hidden for g in gs] + out))
    for name, p in net.parameters().items():
        for idx in [np.unravel_index(i, p.shape) for i in rng.choice(p.size, min(6, p.size), replace=False)]:
            old, eps = p[idx], 1e-6
            p[idx] = old + eps
            lp = float(net.loss(x, y, drops))
            p[idx] = old - eps
            lm = float(net.loss(x, y, drops))
            p[idx] = old
            assert np.isclose(grads[name][idx], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-9), (name, idx)


def _templates(n, rng, n_classes=3):
    """Images (n, 1, 8, 8) of 3 noisy class templates and their labels."""
    proto = rng.normal(size=(n_classes, 1, 8, 8))
    labels = rng.integers(0, n_classes, n)
    return (proto[labels] + 0.7 * rng.normal(size=(n, 1, 8, 8))).astype(np.float32), labels


@pytest.mark.parametrize("backend", backends())
def test_convnet_local_rule_learns(backend):
    """The Gaussian grp+div rule on a conv net: weights move, layer 1's L falls, accuracy rises."""
    be = get_backend(backend)
    rng = np.random.default_rng(1)
    x, y = _templates(1024, np.random.default_rng(2))
    cfg = dict(arch="conv8-pool-conv8-pool-fc16", rule="gaussian", grouping="grp+div", groups=4, sigma=5.0,
               gamma=2.0, delta=1.0, activation="selu", slope=0.01, label_kernel="cosine", dropout=0.05,
               dtype="float32")
    net = build_convnet(cfg, (1, 8, 8), 3, be, rng)
    w0 = [layer.w.copy() for layer in net.hidden]
    opts = net.make_optimizers(1.0, 5e-2)
    first = net.hidden[0]
    objective = lambda: local_objective(x[:256], first.w, y[:256], groups=4, activation="selu",
                                        pool="max", n_classes=3)
    before, L0 = net.evaluate(x, y)[0] / len(y), objective()
    for epoch in range(3):
        for s in range(0, len(y), 64):
            stats = net.train_step(x[s:s + 64], y[s:s + 64], opts, rng)
    after, L1 = net.evaluate(x, y)[0] / len(y), objective()
    assert len(stats.objectives) == 3
    assert all(not np.allclose(layer.w, w) for layer, w in zip(net.hidden, w0))
    assert after > max(0.85, before + 0.4), (before, after)
    assert L1 < L0 - 5e-4, (L0, L1)


def test_check_conv_rule_passes_and_names_variants():
    results = check_conv_rule(Rule(groups=3, p=0.2), "max", backends=("numpy",))
    assert len(results) == 1 and results[0].passed and results[0].max_rel_error < 1e-12
    assert results[0].variant == "conv/gaussian/grp(p=0.2)/lrelu/pool=max"


def test_conv_variants_cover_the_matrix():
    names = [name for name, _, _ in conv_variants()]
    assert len(names) == len(set(names)) == 18
    assert "conv/cosine/grp+div/selu/pool=max" in names


@pytest.mark.gpu
def test_cupy_layout_kernels_on_random_geometries():
    """Property test of the tiled CuPy kernels: for random geometries (partial 32x32 tiles in both axes,
    non-square kernels, padding wider than the kernel's reach) im2col, rows->NCHW and the pool gather
    equal the numpy reference bit for bit, with one kernel offset per block and with all of them."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    cp = _cupy()
    from threefactor.backends import _conv_cupy

    @hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
    @hypothesis.given(m=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(2, 9), w=st.integers(2, 9),
                      kh=st.integers(1, 3), kw=st.integers(1, 3), pad=st.integers(0, 2),
                      all_offsets=st.booleans())
    def check(m, c, h, w, kh, kw, pad, all_offsets):
        hypothesis.assume(h + 2 * pad >= kh and w + 2 * pad >= kw)
        _conv_cupy.IM2COL_ALL_OFFSETS = all_offsets
        rng = np.random.default_rng(m * 1000 + c)
        x = rng.normal(size=(m, c, h, w)).astype(np.float32)
        np.testing.assert_array_equal(cp.asnumpy(get_backend("cupy").im2col(cp.asarray(x), kh, kw, pad)),
                                      conv.im2col(x, kh, kw, pad))
        rows = rng.normal(size=(m * h * w, c)).astype(np.float32)
        np.testing.assert_array_equal(cp.asnumpy(get_backend("cupy").rows_to_nchw(cp.asarray(rows), m, h, w)),
                                      conv.rows_to_nchw(rows, m, h, w))
        pooled, idx = conv.max_pool2x2(x)
        gp, gi = _gpu_pool2x2(cp.asarray(x))
        np.testing.assert_array_equal(cp.asnumpy(gi), idx)
        np.testing.assert_array_equal(cp.asnumpy(_gpu_gather(cp.asarray(x * 2), cp.asarray(x))),
                                      conv.pool_gather(x * 2, idx))

    default = _conv_cupy.IM2COL_ALL_OFFSETS
    try:
        check()
    finally:
        _conv_cupy.IM2COL_ALL_OFFSETS = default
