"""The two-point rule in time (Eq. 57-66): exact identity with the batch rule, the circuit by
its definitions, the running average's statistics, the fused update kernels and bad input."""
from __future__ import annotations

import numpy as np
import pytest

import threefactor as tf
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.rule.online import TwoPointRule, TwoPointUpdate, apply_update, circuit_b2, layer_activity, two_point_update
from threefactor.nn.online_layer import OnlineLayer

RULE = dict(sigma=1.3, gamma=1.7)


def _problem(seed=0, m=7, n_in=5, n_out=6, n_classes=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = (0.6 * rng.standard_normal((n_out, n_in))).astype(dtype)
    y = rng.integers(0, n_classes, m)
    return x, w, y


def _all_pairs(m):
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    return i.ravel(), j.ravel()


# -- the identity: exact centring over all m² ordered pairs = the batch rule -------------
@pytest.mark.parametrize("activation", ["linear", "relu", "lrelu", "selu"])
@pytest.mark.parametrize("groups,divisive", [(None, False), (3, False), (2, True)])
def test_all_pairs_with_exact_centring_equal_local_update(activation, groups, divisive):
    x, w, y = _problem()
    rule = tf.Rule(activation=activation, groups=groups, **RULE)
    trule = TwoPointRule(rule, n_classes=3, divisive=divisive)
    i, j = _all_pairs(len(x))
    got = two_point_update(x[i], x[j], w, y[i], y[j], trule)          # mean over pairs, b3 = mean b2
    ref = tf.local_update(x, w, y, activation=activation, groups=groups, n_classes=3, **RULE)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_all_pairs_sum_is_m2_times_batch_update_up_to_group_constant():
    """Σ over pairs of the paper's M_α Δ(h x) (Eq. 63a, 66; no 2(1-p)/g) = m² g / 2(1-p) · ΔW_batch."""
    x, w, y = _problem(1, m=6, n_out=8)
    rule = tf.Rule(groups=2, p=0.3, **RULE)
    trule = TwoPointRule(rule, n_classes=3)
    i, j = _all_pairs(len(x))
    be = get_backend("numpy")
    now, prev = layer_activity(trule, x[i], w, be), layer_activity(trule, x[j], w, be)
    _, b1, k, b2 = circuit_b2(trule, now, prev, y[i] == y[j])
    M = -(b2 - b2.mean()) * k / rule.sigma ** 2                          # Eq. 62, exact b3
    factor = np.repeat(M[:, None] * (now.v - prev.v), 4, axis=1)       # Eq. 66, g = 4
    total = sum(np.outer(factor[q] * now.h[q], x[i[q]]) - np.outer(factor[q] * prev.h[q], x[j[q]])
                for q in range(len(i)))
    ref = tf.local_update(x, w, y, groups=2, p=0.3, n_classes=3, **RULE)
    np.testing.assert_allclose(total, len(x) ** 2 * 4 / (2 * 0.7) * ref, rtol=1e-12,
                               atol=1e-12 * np.abs(total).max())


def test_b2_centring_is_gamma_ky_minus_two_kz():
    """b2 - mean(b2) = γ k̊y - 2 k̊z over all ordered pairs (Eq. 11, 60)."""
    x, w, y = _problem(2)
    trule = TwoPointRule(tf.Rule(**RULE), n_classes=3)
    i, j = _all_pairs(len(x))
    be = get_backend("numpy")
    _, _, k, b2 = circuit_b2(trule, layer_activity(trule, x[i], w, be), layer_activity(trule, x[j], w, be),
                             y[i] == y[j])
    ky = np.where(y[i] == y[j], 1.0, -0.5)
    np.testing.assert_allclose(b2 - b2.mean(), 1.7 * (ky - ky.mean()) - 2 * (k - k.mean()), atol=1e-14)


# -- the sequential circuit, literally -------------------------------------------------------
def _literal_sequence(xs, ys, w, rule, beta, n_classes):
    """Eq. 57-62 for one stream (B = 1), loop by loop: ΔW_t and (b1, b2, b3, M) per step."""
    s2 = rule.sigma ** 2
    b3 = None
    out = []
    for t in range(1, len(xs)):
        a_now, a_prev = w @ xs[t], w @ xs[t - 1]
        z_now = np.where(a_now > 0, a_now, rule.slope * a_now)
        z_prev = np.where(a_prev > 0, a_prev, rule.slope * a_prev)
        f_now = np.where(a_now > 0, 1.0, rule.slope)
        f_prev = np.where(a_prev > 0, 1.0, rule.slope)
        b1 = sum((z_now[n] - z_prev[n]) ** 2 for n in range(len(z_now)))                  # Eq. 59
        ky = 1.0 if ys[t] == ys[t - 1] else -1.0 / (n_classes - 1)
        b2 = rule.gamma * ky - 2 * np.exp(-b1 / (2 * s2))                                  # Eq. 60
        centre = b2 if b3 is None else b3
        b3 = beta * b2 + (1 - beta) * centre                                               # Eq. 61
        M = -(b2 - centre) * np.exp(-b1 / (2 * s2)) / s2                                   # Eq. 62
        dw = np.empty_like(w)
        for n in range(w.shape[0]):
            for k in range(w.shape[1]):                                                    # Eq. 57, B.2
                dw[n, k] = M * (z_now[n] - z_prev[n]) * (f_now[n] * xs[t][k] - f_prev[n] * xs[t - 1][k])
        out.append((dw, b1, b2, centre, M))
    return out


def test_single_stream_matches_literal_circuit_and_record():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((9, 4))
    ys = rng.integers(0, 3, 9)
    w = rng.standard_normal((5, 4))
    rule = tf.Rule(activation="lrelu", slope=0.1, **RULE)
    layer = OnlineLayer(w, rule, beta=0.3, streams=1, n_classes=3, record=True)
    got = [layer.step(xs[t:t + 1], ys[t:t + 1])[1].dense() for t in range(len(xs))]
    assert not got[0].any()                                        # no pair at the first step
    ref = _literal_sequence(xs, ys, w, rule, 0.3, 3)
    rec = layer.record.to_dict()
    assert rec["b1"].shape == (8, 1) and list(rec["t"]) == list(range(1, 9))
    for t, (dw, b1, b2, b3, M) in enumerate(ref):
        np.testing.assert_allclose(got[t + 1], dw, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose([rec[k][t, 0] for k in ("b1", "b2", "b3", "M")], [b1, b2, b3, M],
                                   rtol=1e-12, atol=1e-15)


def test_streams_are_independent_pairs():
    """B streams stepped together = the mean of the B single pairs with each stream's b3."""
    x, w, y = _problem(4, m=12)
    trule = TwoPointRule(tf.Rule(groups=3, **RULE), n_classes=3, beta=0.2, b3_init=-1.0)
    layer = OnlineLayer(w, trule, streams=4)
    layer.step(x[:4], y[:4])
    _, upd = layer.step(x[4:8], y[4:8])
    ref = two_point_update(x[4:8], x[:4], w, y[4:8], y[:4], trule, b3=-1.0)
    np.testing.assert_allclose(upd.dense(), ref, rtol=1e-12, atol=1e-15)
    _, upd = layer.step(x[8:], y[8:])
    ref = two_point_update(x[8:], x[4:8], w, y[8:], y[4:8], trule, b3=_b3(trule, x, w, y))
    np.testing.assert_allclose(upd.dense(), ref, rtol=1e-12, atol=1e-15)


def _b3(trule, x, w, y):
    """b3 of each stream after the second step of the test above (Eq. 61 from b3_init)."""
    be = get_backend("numpy")
    b2 = circuit_b2(trule, layer_activity(trule, x[4:8], w, be), layer_activity(trule, x[:4], w, be),
                    y[4:8] == y[:4])[3]
    return trule.beta * b2 + (1 - trule.beta) * (-1.0)


def test_shared_b3_averages_over_streams():
    x, w, y = _problem(5, m=8)
    layer = OnlineLayer(w, tf.Rule(**RULE), streams=4, n_classes=3, beta=0.5, shared_b3=True, record=True)
    layer.step(x[:4], y[:4])
    layer.step(x[4:], y[4:])
    rec = layer.record.to_dict()
    assert np.ndim(layer.b3) == 0
    np.testing.assert_allclose(rec["b3"][0], rec["b2"][0].mean())          # first pair starts b3 at mean b2
    np.testing.assert_allclose(layer.b3, rec["b2"][0].mean())


# -- statistics: the running average gives the batch gradient in expectation --------------------
@pytest.mark.parametrize("groups", [None, 4])
def test_running_average_update_is_the_batch_gradient_in_expectation(groups):
    """Streams of i.i.d. samples from m points make (t, t-1) uniform ordered pairs, so the mean
    update estimates the batch update.  Stated tolerance: within 3.5 standard errors of the mean
    (SE from the per-step updates, ~5% of ‖ΔW‖ here), and the running average's own effect,
    compared with exact centring (b3 = mean b2) on the very same pairs, below 3% of ‖ΔW‖ at β = 0.01."""
    rng = np.random.default_rng(11)
    m, n_classes, beta, B, T = 30, 3, 0.01, 500, 200
    x = rng.standard_normal((m, 6))
    w = 0.7 * rng.standard_normal((8, 6))
    y = rng.integers(0, n_classes, m)
    rule = tf.Rule(sigma=1.5, gamma=2.0, groups=groups)
    trule = TwoPointRule(rule, n_classes=n_classes, beta=beta)
    ref = tf.local_update(x, w, y, sigma=1.5, gamma=2.0, groups=groups, n_classes=n_classes)
    i, j = _all_pairs(m)
    be = get_backend("numpy")
    b2_mean = circuit_b2(trule, layer_activity(trule, x[i], w, be), layer_activity(trule, x[j], w, be),
                         y[i] == y[j])[3].mean()
    layer = OnlineLayer(w, trule, streams=B)
    running, exact, prev = [], [], None
    for t in range(int(5 / beta) + T):
        idx = rng.integers(0, m, B)
        _, upd = layer.step(x[idx], y[idx])
        if t >= int(5 / beta):                                 # burn-in: b3 forgets its start
            running.append(upd.dense())
            exact.append(two_point_update(x[idx], x[prev], w, y[idx], y[prev], trule, b3=b2_mean))
        prev = idx
    running, exact = np.array(running), np.array(exact)
    norm = np.linalg.norm(ref)
    se = np.sqrt(running.var(axis=0, ddof=1).sum() / T)
    assert np.linalg.norm(running.mean(0) - ref) < 3.5 * se, (np.linalg.norm(running.mean(0) - ref), se)
    assert np.linalg.norm(exact.mean(0) - ref) < 3.5 * se
    assert np.linalg.norm(running.mean(0) - exact.mean(0)) < 0.03 * norm
    assert se < 0.08 * norm


def _projection_on_batch_update(rule_kw, beta, shared, B=2000, T=300, seed=2):
    """Mean over T steps (after burn-in, w fixed) of <ΔW_t, ΔW_batch> / ‖ΔW_batch‖², and its standard error."""
    rng = np.random.default_rng(seed)
    m, n_classes = 12, 3
    x, w, y = rng.normal(size=(m, 6)), rng.normal(size=(8, 6)), rng.integers(0, n_classes, m)
    ref = tf.local_update(x, w, y, n_classes=n_classes, **rule_kw)
    layer = OnlineLayer(w, tf.Rule(**rule_kw), streams=B, n_classes=n_classes, beta=beta, shared_b3=shared)
    burn, proj = int(min(5 / beta, 600)), []
    for t in range(burn + T):
        idx = rng.integers(0, m, B)
        _, upd = layer.step(x[idx], y[idx])
        if t >= burn:
            proj.append(np.sum(upd.dense() * ref) / np.sum(ref * ref))
    return np.mean(proj), np.std(proj, ddof=1) / np.sqrt(T)


@pytest.mark.parametrize("rule_kw", [dict(sigma=2.0), dict(groups=4, p=0.2, sigma=1.0)], ids=["plain", "grouped"])
def test_shared_b3_is_unbiased_per_stream_bias_shrinks_with_beta(rule_kw):
    """Per-stream b3_{t-1} holds β b2_{t-1}, whose pair shares x_{t-1} with the current one: a bias of
    order β (projection 0.89 plain / 0.75 grouped at β = 1 on this problem, 0.98 / 0.95 at β = 0.2,
    1.00 at 0.01).  A shared b3 holds a stream's own b2 at weight β/B only: unbiased to ~1/B even at
    β = 1.  Standard errors here are ~0.004; every margin below is 5 SE or more."""
    shared, se = _projection_on_batch_update(rule_kw, 1.0, True)
    assert abs(shared - 1) < 0.02, (shared, se)
    bias = {beta: 1 - _projection_on_batch_update(rule_kw, beta, False)[0] for beta in (1.0, 0.2, 0.01)}
    assert bias[1.0] > 0.08, bias                           # a real bias at β = 1 ...
    assert 0 < bias[0.2] < 0.4 * bias[1.0], bias            # ... shrinking with β (about in proportion)
    assert abs(bias[0.01]) < 0.02, bias                     # ... and gone at the default β


# -- learning ----------------------------------------------------------------------------------
def test_online_learning_lowers_the_layer_objective():
    rng = np.random.default_rng(6)
    n_classes, m = 3, 296
    centres = 1.5 * rng.standard_normal((n_classes, 10))
    y = rng.integers(0, n_classes, m)
    x = centres[y] + rng.standard_normal((m, 10))
    w0 = 0.3 * rng.standard_normal((16, 10))
    kw = dict(sigma=2.0, gamma=2.0, n_classes=n_classes)
    before = tf.local_objective(x, w0, y, **kw)
    layer = OnlineLayer(w0.copy(), tf.Rule(sigma=2.0, gamma=2.0), beta=0.05, streams=8, n_classes=n_classes)
    for _ in range(4):
        for t in range(0, m, 8):
            layer.learn(x[t:t + 8], y[t:t + 8], lr=0.5)
    after = tf.local_objective(x, layer.w, y, **kw)
    assert np.abs(layer.w - w0).max() > 1e-3
    assert after < before - 0.01, (before, after)


# -- the fused update -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("R", [1, 2, 3, 5, 8, 32])
def test_fused_update_matches_reference(dtype, tol, R):
    rng = np.random.default_rng(R)
    w = rng.standard_normal((37, 29)).astype(dtype)
    upd = TwoPointUpdate(rng.standard_normal((R, 37)).astype(dtype), rng.standard_normal((R, 29)).astype(dtype))
    ref = w.astype(np.float64) + 0.3 * upd.post.astype(np.float64).T @ upd.pre.astype(np.float64)
    got = apply_update(w, upd, 0.3)
    assert got is w and w.dtype == dtype
    np.testing.assert_allclose(w, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("name", ["accumulate", "accumulate_serial"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_kernels_both_paths(name, dtype):
    from threefactor.backends import _online_kernels as kern
    rng = np.random.default_rng(1)
    for R in (1, 2, 3, 6, 9):
        w = rng.standard_normal((23, 31)).astype(dtype)
        ut, pre = rng.standard_normal((23, R)).astype(dtype), rng.standard_normal((R, 31)).astype(dtype)
        ref = w.astype(np.float64) + ut.astype(np.float64) @ pre.astype(np.float64)
        getattr(kern, name)(w, ut, pre)
        np.testing.assert_allclose(w, ref, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)


def test_fused_update_needs_c_contiguous_w():
    w = np.zeros((6, 4)).T
    upd = TwoPointUpdate(np.ones((2, 4)), np.ones((2, 6)))
    with pytest.raises(ValueError, match="w must be C-contiguous"):
        apply_update(w, upd, 0.1)


@pytest.mark.parametrize("refresh, delays", [(False, 1), (True, 1), (True, 2)])
def test_float32_stays_float32_and_numba_backend_agrees(refresh, delays):
    x, w, y = _problem(7, m=12, dtype=np.float32)
    outs = {}
    for name in ("numpy", "numba"):
        try:
            get_backend(name)
        except BackendUnavailable:  # pragma: no cover
            continue
        layer = OnlineLayer(w.copy(), tf.Rule(groups=3, **RULE), streams=4, n_classes=3, backend=name,
                            refresh=refresh, delays=delays)
        for t in range(3):
            out = layer.learn(x[4 * t:4 * t + 4], y[4 * t:4 * t + 4], 0.1)
        assert out.dtype == np.float32 and layer.w.dtype == np.float32
        outs[name] = layer.w
    for w_other in outs.values():
        np.testing.assert_allclose(w_other, outs["numpy"], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("threads,grid_y", [(256, 65535), (32, 7)])     # small: strided loops run
def test_cupy_update_matches_numpy(monkeypatch, threads, grid_y):
    try:
        be = get_backend("cupy")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    import cupy
    from threefactor.backends import _online_cupy
    monkeypatch.setattr(_online_cupy, "_THREADS", threads)
    monkeypatch.setattr(_online_cupy, "_MAX_GRID_Y", grid_y)
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for R in (1, 3, 32, 512):
            w = rng.standard_normal((300, 130)).astype(dtype)
            post = rng.standard_normal((R, 300)).astype(dtype)
            pre = rng.standard_normal((R, 130)).astype(dtype)
            ref = w.astype(np.float64) + 0.5 * post.astype(np.float64).T @ pre.astype(np.float64)
            wg = cupy.asarray(w)
            apply_update(wg, TwoPointUpdate(cupy.asarray(post), cupy.asarray(pre)), 0.5)
            np.testing.assert_allclose(be.to_numpy(wg), ref, rtol=tol, atol=tol * np.abs(ref).max())
    x, w, y = _problem(8, m=12)
    for refresh, delays in ((False, 1), (True, 1), (True, 2)):       # refreshed: one GEMM of the B·K inputs
        layers = [OnlineLayer(w.copy(), tf.Rule(groups=3, **RULE), streams=4, n_classes=3, backend=b,
                              refresh=refresh, delays=delays) for b in ("numpy", "cupy")]
        for layer in layers:
            for t in range(3):
                layer.learn(x[4 * t:4 * t + 4], y[4 * t:4 * t + 4], 0.1)
        np.testing.assert_allclose(be.to_numpy(layers[1].w), layers[0].w, rtol=1e-10, atol=1e-12)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0, -0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval(beta):
    with pytest.raises(ValueError, match="beta"):
        TwoPointRule(tf.Rule(), beta=beta)
    with pytest.raises(ValueError, match="beta"):
        OnlineLayer(np.zeros((4, 3)), tf.Rule(), beta=beta)


def test_bad_streams_and_labels():
    layer = OnlineLayer(np.ones((4, 3)), tf.Rule(), streams=2, n_classes=3)
    with pytest.raises(ValueError, match=r"x must have shape \(streams, n_in\) = \(2, 3\)"):
        layer.step(np.ones((3, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="x must have shape"):
        layer.step(np.ones(3), np.zeros(2, int))
    with pytest.raises(ValueError, match="labels are missing"):
        layer.step(np.ones((2, 3)), None)
    with pytest.raises(ValueError, match="labels must have shape"):
        layer.step(np.ones((2, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"labels must be in \[0, n_classes\)"):
        layer.step(np.ones((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be integers"):
        layer.step(np.ones((2, 3)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="streams"):
        OnlineLayer(np.ones((4, 3)), tf.Rule(), streams=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rule=tf.Rule(kernel="cosine")), "kernel='gaussian'"),
    (dict(rule=tf.Rule(label_kernel="linear")), "label_kernel='cosine'"),
    (dict(rule=tf.Rule(), divisive=True), "divisive=True needs groups"),
    (dict(rule=tf.Rule(), n_classes=1), "n_classes"),
])
def test_rule_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoPointRule(**kwargs)


# -- the trainer's hook: an MLP whose hidden layers learn online --------------------------------
def _train_mlp(online, lr_local, epochs=4):
    from threefactor.nn.mlp import MLP
    from threefactor.nn.online_layer import make_online
    rng = np.random.default_rng(0)
    n_classes, m, B = 4, 1024, 32
    centres = rng.standard_normal((n_classes, 20))
    y = rng.integers(0, n_classes, m)
    x = (centres[y] + rng.standard_normal((m, 20))).astype(np.float32)
    net = MLP(20, [32, 32], n_classes, tf.Rule(sigma=2.0, gamma=2.0, groups=8), divisive=True, dropout=0.0,
              backend=get_backend("numpy"), rng=rng)
    if online:
        make_online(net, streams=B, beta=0.05)
    opts = net.make_optimizers(lr_local, 0.05)
    w0 = [layer.w.copy() for layer in net.hidden]
    for _ in range(epochs):
        perm = rng.permutation(m)
        for s in range(0, m, B):
            stats = net.train_step(x[perm[s:s + B]], y[perm[s:s + B]], opts, rng)
    return net, w0, stats, net.evaluate(x, y)[0] / m, (x, y)


def test_make_online_mlp_learns():
    """Online hidden layers beat frozen random ones (the last-layer baseline) on the same data."""
    from threefactor.nn.online_layer import OnlineHiddenLayer
    net, w0, stats, acc, (x, y) = _train_mlp(True, 0.1)
    _, _, _, frozen, _ = _train_mlp(False, 0.0)
    assert all(isinstance(layer, OnlineHiddenLayer) for layer in net.hidden)
    assert all(np.abs(layer.w - w).max() > 1e-2 for layer, w in zip(net.hidden, w0))
    assert net.hidden[0].w is net.hidden[0].online.w and net.hidden[0].w.dtype == np.float32
    # an online step has no batch objective (B = 1: no pair); L comes from an evaluation batch
    from threefactor.training.objectives import layer_objectives
    assert stats.objectives == []
    objs = layer_objectives(net, x[:256], y[:256])
    assert len(objs) == 2 and all(np.isfinite(objs))
    assert acc > 0.93 and acc > frozen + 0.03, (acc, frozen)
    # a batch of another size passes through without learning and keeps the streams' state
    layer = net.hidden[0]
    prev = layer.online.activity
    out, (dw,), _ = layer.local_forward(x[:5], y[:5], 4, get_backend("numpy"))
    assert out.shape == (5, 32) and not dw.any() and layer.online.activity is prev


def test_record_plot_and_example_script(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    x, w, y = _problem(9, m=12, n_out=6)
    layer = OnlineLayer(w, tf.Rule(groups=3, **RULE), streams=2, n_classes=3, record=True)
    for t in range(0, 12, 2):
        layer.step(x[t:t + 2], y[t:t + 2])
    d = layer.record.to_dict()
    assert d["factor"].shape == (5, 2, 3) and np.allclose(d["factor"], d["M"][:, :, None] * d["group"])
    layer.record.plot(stream=1, path=tmp_path / "record.png")
    assert (tmp_path / "record.png").stat().st_size > 1000
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "online_circuit.py"
    spec = importlib.util.spec_from_file_location("online_circuit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--stimuli", "2", "--out", str(tmp_path / "circuit.png")]) == 0
    assert (tmp_path / "circuit.png").stat().st_size > 10000


def test_state_round_trip_continues_identically():
    x, w, y = _problem(10, m=12)
    a = OnlineLayer(w.copy(), tf.Rule(groups=3, **RULE), streams=3, n_classes=3, beta=0.3)
    assert a.state() == {}
    a.learn(x[:3], y[:3], 0.1)
    a.learn(x[3:6], y[3:6], 0.1)
    b = OnlineLayer(a.w.copy(), tf.Rule(groups=3, **RULE), streams=3, n_classes=3, beta=0.3)
    b.load_state({k: np.array(v) for k, v in a.state().items()})
    for layer in (a, b):
        layer.learn(x[6:9], y[6:9], 0.1)
        layer.learn(x[9:], y[9:], 0.1)
    np.testing.assert_array_equal(a.w, b.w)
    assert b.t == a.t == 4
    with pytest.raises(ValueError, match="state holds 3 streams"):
        OnlineLayer(w, tf.Rule(groups=3, **RULE), streams=2, n_classes=3).load_state(a.state())
