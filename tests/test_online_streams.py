"""Streams are a compute knob (issue 18): per-sample rates, the logged objective, the fused B = 1 step."""
import json

import numpy as np
import pytest

from threefactor import Rule, get_backend
from threefactor.cli import main as cli
from threefactor.nn.online_layer import OnlineLayer
from threefactor.nn.optim import SGD
from threefactor.rule.online import TwoPointUpdate
from threefactor.training.config import RATE_STREAMS, rate_scale, step_beta
from threefactor.training.train import build_network, train

from test_train import _config, _quiet, data_root  # noqa: F401  (fixture)

RULE = Rule(sigma=2.0, gamma=2.0, groups=4)


def _clusters(m, n_in=20, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = 1.5 * rng.standard_normal((n_classes, n_in))
    y = rng.integers(0, n_classes, m)
    return centres[y] + rng.standard_normal((m, n_in)), y


# -- one step of B streams is the sum of B single-stream steps at the per-sample rate --------------
@pytest.mark.parametrize("shared_b3", [False, True])
def test_step_of_b_streams_is_the_sum_of_single_stream_steps(shared_b3):
    """Same weights, same pairs: W after one step of B = 8 streams at lr·B/256 minus W0 equals the sum
    over b of (W after stream b alone at lr/256 minus W0), float64, to round-off.  b3_init fixes the
    centring of the first pair, so a shared b3 couples nothing yet."""
    B, lr = 8, 0.3
    x, y = _clusters(2 * B)
    w0 = np.random.default_rng(1).standard_normal((16, 20)) / 5
    cfg = dict(mode="online", rate_rule="per-sample", streams=B, rate_streams=RATE_STREAMS, beta=0.01,
               shared_b3=shared_b3)
    many = OnlineLayer(w0.copy(), RULE, streams=B, shared_b3=shared_b3, b3_init=0.3)
    many.step(x[:B], y[:B])
    _, upd = many.step(x[B:], y[B:])
    many.apply(upd, lr * rate_scale(cfg))
    total = np.zeros_like(w0)
    for b in range(B):
        one = OnlineLayer(w0.copy(), RULE, streams=1, shared_b3=shared_b3, b3_init=0.3)
        one.step(x[b:b + 1], y[b:b + 1])
        _, upd = one.step(x[B + b:B + b + 1], y[B + b:B + b + 1])
        one.apply(upd, lr * rate_scale(dict(cfg, streams=1)))
        total += one.w - w0
    np.testing.assert_allclose(many.w - w0, total, rtol=1e-12, atol=1e-15)
    assert np.abs(total).max() > 1e-4          # the step did something


def _run(order, streams, lr, steps_rule="per-sample"):
    """One layer trained on the samples ``order`` (stream b of step t takes order[t·B + b]); W."""
    x, y = _clusters(16384, seed=3)
    layer = OnlineLayer(np.random.default_rng(1).standard_normal((16, 20)) / 5, RULE, streams=streams,
                        beta=0.01, shared_b3=True)
    cfg = dict(mode="online", rate_rule=steps_rule, streams=streams, rate_streams=RATE_STREAMS)
    for s in range(0, len(order), streams):
        idx = order[s:s + streams]
        layer.learn(x[idx], y[idx], lr * rate_scale(cfg))
    return layer.w


def test_b16_and_b1_on_the_same_samples_end_alike():
    """16384 samples, one layer (20 -> 16, 4 groups), rate 2.0 per step of 256 samples: B = 16 and B = 1
    on the same samples in the same order move W alike.

    What the rate predicts: the drift per sample is the same at any B, so ‖W_1 - W_16‖ is the noise of
    the random pairs, the order of ‖W_16 - W_16'‖ between two orders of the samples (measured: 0.22 and
    0.25 of the movement ‖W_16 - W_0‖; their movements agree to 4%).  Tolerances: movements within
    0.8-1.25 of each other, ‖W_1 - W_16‖ < 1.5 ‖W_16 - W_16'‖ and < 0.5 of the movement.  With per-step
    rates (before issue 18) B = 1 moves far more, which the last check catches."""
    n, lr = 16384, 2.0
    order = np.random.default_rng(5).permutation(n)
    w0 = _run(order[:0], 1, lr)
    w16, w1 = _run(order, 16, lr), _run(order, 1, lr)
    w16b = _run(np.random.default_rng(6).permutation(n), 16, lr)
    move = np.linalg.norm(w16 - w0)
    assert 0.8 < np.linalg.norm(w1 - w0) / move < 1.25
    diff, noise = np.linalg.norm(w16 - w1), np.linalg.norm(w16 - w16b)
    assert diff < 1.5 * noise and diff < 0.5 * move, (diff, noise, move)
    old = _run(order[:1024], 1, lr, "per-step")         # 1/16 of the samples at per-step rates
    assert np.linalg.norm(old - w0) > 2 * move


def test_rate_rule_config_and_old_runs(data_root, tmp_path):  # noqa: F811
    """config.json records the rate rule; a config without it (written before) keeps per-step rates and
    resumes; --rate-rule needs --mode online; an unknown rule is named."""
    cfg = _config(data_root, "gaussian", "grp+div", mode="online", streams=16, batch_size=16, epochs=1)
    assert cfg["rate_rule"] == "per-sample" and cfg["rate_streams"] == 256
    assert rate_scale(cfg) == 16 / 256 and step_beta(cfg) == pytest.approx(1 - 0.99 ** (16 / 256), rel=1e-12)
    assert step_beta(dict(cfg, shared_b3=False)) == 0.01
    assert rate_scale(dict(cfg, rate_rule="per-step")) == 1.0
    batch = _config(data_root, "gaussian", "grp+div")
    assert batch["rate_rule"] is None and rate_scale(batch) == 1.0
    with pytest.raises(ValueError, match=r"rate_rule needs mode='online'"):
        _config(data_root, "gaussian", "grp+div", rate_rule="per-step")
    with pytest.raises(ValueError, match=r"rate_rule='per-smaple'.*per-sample"):
        _config(data_root, "gaussian", "grp+div", mode="online", rate_rule="per-smaple")
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    saved = json.loads(rd.config_path.read_text())
    assert saved["rate_rule"] == "per-sample"
    old = {k: v for k, v in saved.items() if k not in ("rate_rule", "rate_streams")}   # a pre-issue-18 run
    rd.config_path.write_text(json.dumps(old))
    assert rate_scale(old) == 1.0 and step_beta(old) == old["beta"]
    assert cli.main(["train", "--resume", str(rd.path), "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2]
    assert "rate_rule" not in json.loads(rd.config_path.read_text())


# -- the logged objective ------------------------------------------------------------------------
def test_objective_of_b1_moves_once_the_hidden_layers_learn(tmp_path):
    """B = 1 (no pair in a step, so no batch L): metrics.jsonl's L is that of the fixed evaluation batch;
    it falls from its value at the initial weights as the layers learn (4 clusters in 20 dimensions,
    hidden 16-16, 3 epochs of 500 samples: measured -0.0018, -0.00004 at the start, -0.22, -0.13 after)."""
    from threefactor.training.config import resolve_config
    from threefactor.training.objectives import layer_objectives, objective_indices
    x, y = _clusters(600, seed=7)
    x = x.astype(np.float32)
    cfg = resolve_config(dataset="mnist", hidden=[16, 16], groups=4, sigma=2.0, mode="online", streams=1,
                         epochs=3, lr_local=2.0, lr_out=2.0, dropout=0.0, backend="numpy")
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet, data=(x[:500], y[:500], x[500:], y[500:], 4))
    rec = rd.read_metrics()
    idx = objective_indices(cfg, 500)
    assert len(idx) == 500 and np.array_equal(idx, objective_indices(cfg, 500))
    net = build_network(cfg, 20, 4, get_backend("numpy"), np.random.default_rng(cfg["seed"]))
    init = layer_objectives(net, x[idx], y[idx])
    for r in rec:
        assert r["local_objective"] == [r["local_objective_1"], r["local_objective_2"]]
    last = rec[-1]["local_objective"]
    assert all(b < a - 0.05 for a, b in zip(init, last)), (init, last)
    assert rec[-1]["test_accuracy"] > 80


def test_batch_and_online_log_the_same_objective_at_the_same_weights(data_root, tmp_path):  # noqa: F811
    """The objective is a function of the weights and the evaluation batch only: a batch run and an online
    run whose hidden layers do not learn (lr_local 0) log the same L."""
    kw = dict(epochs=1, lr_local=0.0, dropout=0.0)
    a = train(_config(data_root, "gaussian", "grp+div", **kw), tmp_path / "a", progress=False, log=_quiet)
    b = train(_config(data_root, "gaussian", "grp+div", mode="online", streams=4, batch_size=4, **kw), tmp_path / "b",
              progress=False, log=_quiet)
    la, lb = a.read_metrics()[0]["local_objective"], b.read_metrics()[0]["local_objective"]
    np.testing.assert_allclose(la, lb, rtol=1e-5)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "x"])
def test_bad_streams_values_keep_their_errors(data_root, tmp_path, value):  # noqa: F811
    argv = ["train", "--dataset", "mnist", "--hidden", "32", "--groups", "8", "--mode", "online",
            "--streams", value, "--epochs", "1", "--data-root", str(data_root), "--backend", "numpy",
            "--no-progress", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    msg = str(exc.value.code) if not isinstance(exc.value.code, int) else ""
    assert exc.value.code == 2 or "streams must be a positive integer" in msg, msg


# -- the fused low-rank SGD step -----------------------------------------------------------------
@pytest.mark.parametrize("R, shape", [(0, (33, 47)), (2, (33, 47)), (3, (33, 47)), (6, (33, 47)),
                                      (3, (1024, 1400)), (5, (1024, 1024))])
@pytest.mark.parametrize("mu,wd", [(0.95, 1e-3), (0.0, 0.0)])
def test_fused_low_rank_sgd_equals_the_dense_step(R, shape, mu, wd):
    """SGD.step with a TwoPointUpdate (one Numba pass over W and its buffer, ΔW never formed) equals the
    numpy step on ΔW = postᵀ pre, float64, over three steps: R = 2 and 3 (one and two pairs at B = 1,
    written out), other R through the scratch row, on one thread (small W) and in parallel (W·R ≥ 2^22)."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(R)
    w = rng.standard_normal(shape)
    n_out, n_in = shape
    a, b = w.copy(), w.copy()
    fused, dense = SGD([a], 0.05, momentum=mu, weight_decay=wd), SGD([b], 0.05, momentum=mu, weight_decay=wd,
                                                                      fused=False)
    for _ in range(3):
        upd = TwoPointUpdate(rng.standard_normal((R, n_out)), rng.standard_normal((R, n_in)))
        fused.step([upd], sign=-1.0)
        dense.step([upd], sign=-1.0)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fused.buffers[0], dense.buffers[0], rtol=1e-12, atol=1e-14)


def test_b1_training_fused_equals_unfused_numpy_vs_numba(data_root, tmp_path):  # noqa: F811
    """A B = 1 run, float64: the numba backend with the fused step and the numpy backend with the
    optimisers' reference (unfused) path end with the same weights to round-off."""
    pytest.importorskip("numba")
    from threefactor.training.loop import run_epochs
    from threefactor.training.runs import RunDir
    from threefactor.training.train import load_data
    out = {}
    for backend, fused in (("numba", None), ("numpy", False)):
        cfg = _config(data_root, "gaussian", "grp+div", mode="online", streams=1, batch_size=1, epochs=1, subset=64,
                      lr_local=20.0, lr_out=5.0, dtype="float64", backend=backend)
        be = get_backend(backend)
        rng = np.random.default_rng(cfg["seed"])
        net = build_network(cfg, 784, 10, be, rng)
        opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                                   weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"])
        for opt in opts.values():
            opt.fused = fused
        rd = RunDir(tmp_path / backend)
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_config(cfg)
        data = load_data(cfg, False, _quiet)[:4]
        run_epochs(cfg, rd, net, opts, rng, be, data, progress=False, log=_quiet)
        out[backend] = {k: be.to_numpy(v) for k, v in net.state().items()}
    for k in out["numpy"]:
        np.testing.assert_allclose(out["numba"][k], out["numpy"][k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.gpu
@pytest.mark.parametrize("threads,grid_y", [(256, 65535), (32, 7)])     # small: strided loops run
def test_cupy_low_rank_sgd_matches_numpy(monkeypatch, threads, grid_y):
    """The GPU's one-kernel SGD step with a TwoPointUpdate equals the numpy step on the dense ΔW."""
    from threefactor.backends import BackendUnavailable
    try:
        be = get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(str(exc))
    import cupy
    from threefactor.backends import _online_cupy
    monkeypatch.setattr(_online_cupy, "_THREADS", threads)
    monkeypatch.setattr(_online_cupy, "_MAX_GRID_Y", grid_y)
    used, real = [], _online_cupy.sgd_low_rank
    monkeypatch.setattr(_online_cupy, "sgd_low_rank", lambda *a: used.append(real(*a)) or used[-1])
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for R in (0, 2, 6):
            w = rng.standard_normal((40, 70)).astype(dtype)
            ref, wg = w.copy(), cupy.asarray(w)
            dense, fused = SGD([ref], 0.05, weight_decay=1e-3, fused=False), SGD([wg], 0.05, weight_decay=1e-3)
            for _ in range(2):
                post, pre = rng.standard_normal((R, 40)).astype(dtype), rng.standard_normal((R, 70)).astype(dtype)
                dense.step([TwoPointUpdate(post, pre)], sign=-1.0)
                fused.step([TwoPointUpdate(cupy.asarray(post), cupy.asarray(pre))], sign=-1.0)
            np.testing.assert_allclose(be.to_numpy(wg), ref, rtol=tol, atol=tol)
            np.testing.assert_allclose(be.to_numpy(fused.buffers[0]), dense.buffers[0], rtol=tol, atol=tol)
    assert used == [True] * 12                               # the kernel ran, ΔW was never formed


# -- more pairs per sample: each sample with its stream's K previous ones --------------------------
def test_delays_pair_each_sample_with_k_previous_ones():
    """delays=2: the third step's ΔW is the mean of the two-point updates of (t, t-1) and (t, t-2), each
    centred with the b3 the first pair left (Eq. 61), applied as B (K + 1) rank-one terms; its state round-trips through state()/load_state."""
    from threefactor.rule.online import TwoPointRule, circuit_b2, layer_activity, two_point_update
    B, beta = 3, 0.3
    x, y = _clusters(4 * B, seed=9)
    w = np.random.default_rng(2).standard_normal((16, 20)) / 5
    trule = TwoPointRule(RULE, n_classes=4, beta=beta, b3_init=0.5)
    layer = OnlineLayer(w.copy(), trule, streams=B, delays=2)
    steps = [layer.step(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B])[1] for i in range(3)]
    # rank 2B with one previous sample, B (K + 1) = 3B with two: the pairs share x_t's row
    assert steps[1].post.shape[0] == 2 * B and steps[2].post.shape[0] == 3 * B
    assert steps[2].pre.shape[0] == 3 * B
    s = [slice(i * B, (i + 1) * B) for i in range(3)]
    now, prev = (layer_activity(trule, x[i], w, get_backend("numpy")) for i in (s[1], s[0]))
    b2 = circuit_b2(trule, now, prev, y[s[1]] == y[s[0]])[3]
    b3 = beta * b2 + (1 - beta) * 0.5
    ref = 0.5 * (two_point_update(x[s[2]], x[s[1]], w, y[s[2]], y[s[1]], trule, b3=b3)
                 + two_point_update(x[s[2]], x[s[0]], w, y[s[2]], y[s[0]], trule, b3=b3))
    np.testing.assert_allclose(steps[2].dense(), ref, rtol=1e-12, atol=1e-15)
    copy = OnlineLayer(w.copy(), trule, streams=B, delays=2)
    copy.load_state(layer.state())
    a, b = layer.step(x[3 * B:], y[3 * B:])[1], copy.step(x[3 * B:], y[3 * B:])[1]
    np.testing.assert_array_equal(a.dense(), b.dense())
    with pytest.raises(ValueError, match=r"delays must be an integer >= 1"):
        OnlineLayer(w.copy(), trule, streams=B, delays=0)


def test_delays_option_and_resume(data_root, tmp_path):  # noqa: F811
    """--delays K: online only, an integer >= 1; its older samples are checkpointed, so resuming repeats
    the uninterrupted run bit for bit."""
    with pytest.raises(ValueError, match=r"delays needs mode='online'"):
        _config(data_root, "gaussian", "grp+div", delays=2)
    with pytest.raises(ValueError, match=r"delays must be an integer >= 1"):
        _config(data_root, "gaussian", "grp+div", mode="online", streams=32, delays=0)
    cfg = _config(data_root, "gaussian", "grp+div", mode="online", streams=32, delays=3, epochs=2,
                  lr_local=1.6, lr_out=0.4)
    full = train(cfg, tmp_path / "full", progress=False, log=_quiet)
    part = train(dict(cfg, epochs=1), tmp_path / "part", progress=False, log=_quiet)
    assert "online/0/labels3" in part.load_checkpoint()[0]
    train(cfg, part.path, resume=True, progress=False, log=_quiet)
    a, b = full.load_checkpoint()[0], part.load_checkpoint()[0]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- the previous activity, stored or refreshed --------------------------------------------------
def _layer(refresh, streams=4, delays=1, w=None):
    w = np.random.default_rng(1).standard_normal((16, 20)) / 5 if w is None else w
    return OnlineLayer(w.copy(), RULE, streams=streams, b3_init=0.3, refresh=refresh, delays=delays)


@pytest.mark.parametrize("delays", [1, 3])
def test_refresh_changes_nothing_while_the_weights_stay(delays):
    """With W unchanged since the previous samples were seen, their recomputed activity is the stored
    one: the updates of a refreshing layer equal the storing layer's (K = 3: the B·K previous inputs go
    through one GEMM and are split back per delay)."""
    x, y = _clusters(4 * 6)
    a, b = _layer(True, delays=delays), _layer(False, delays=delays)
    for t in range(6):
        xs, ys = x[4 * t:4 * t + 4], y[4 * t:4 * t + 4]
        (out_a, ua), (out_b, ub) = a.step(xs, ys), b.step(xs, ys)
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_allclose(ua.dense(), ub.dense(), rtol=1e-12, atol=1e-15)
    assert np.abs(ua.dense()).max() > 1e-4


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_refresh_must_be_a_bool(bad):
    with pytest.raises(TypeError, match=r"refresh must be True or False"):
        OnlineLayer(np.ones((4, 3)), RULE, refresh=bad)


def test_refreshed_pair_is_the_two_point_update_at_the_current_weights():
    """After W changes, a refreshing layer's update is the two-point update of (x_t, x_{t-1}) both under
    the current W (threefactor.rule.online.two_point_update, float64), and the storing layer's is not."""
    from threefactor.rule.online import two_point_update

    x, y = _clusters(8, seed=2)
    a, b = _layer(True), _layer(False)
    a.step(x[:4], y[:4])
    b.step(x[:4], y[:4])
    bump = np.random.default_rng(9).standard_normal(a.w.shape) / 10
    a.w += bump
    b.w += bump
    _, ua = a.step(x[4:], y[4:])
    _, ub = b.step(x[4:], y[4:])
    want = two_point_update(x[4:], x[:4], a.w, y[4:], y[:4], a.trule, b3=0.3)
    np.testing.assert_allclose(ua.dense(), want, rtol=1e-12, atol=1e-15)
    assert np.linalg.norm(ub.dense() - want) > 0.05 * np.linalg.norm(want)


def test_two_pairs_by_default_and_old_runs_keep_one(data_root, tmp_path, capsys):  # noqa: F811
    """--mode online pairs each sample with two previous ones at lr_local 0.5 unless told; --delays 1 gives
    one pair (the rate stays as given or the default); a run written before --delays (no "delays" in its
    config.json) resumes with one pair per sample, and its start line says so."""
    from threefactor.training.config import ONLINE_DELAYS, ONLINE_LR_LOCAL, resolve_config
    from threefactor.training.naming import upgrade_config

    on = resolve_config(mode="online")
    assert (on["delays"], on["lr_local"]) == (ONLINE_DELAYS, ONLINE_LR_LOCAL) == (2, 0.5)
    one = resolve_config(mode="online", delays=1, lr_local=0.3)
    assert (one["delays"], one["lr_local"]) == (1, 0.3)
    assert resolve_config(mode="online", delays=1)["lr_local"] == ONLINE_LR_LOCAL
    base = ["train", "--dataset", "mnist", "--data-root", str(data_root), "--hidden", "16", "--grouping", "plain",
            "--mode", "online", "--streams", "32", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")]
    assert cli.main(base) == 0
    assert ", 2 pairs per sample" in capsys.readouterr().out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["delays"] == 2
    old = {k: v for k, v in saved.items() if k != "delays"}                  # written before --delays
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    assert upgrade_config(old)["delays"] == 1 and upgrade_config(saved)["delays"] == 2
    assert upgrade_config({"mode": "batch"}).get("delays") is None
    net = build_network(upgrade_config(old), 784, 10, get_backend("numpy"), np.random.default_rng(0))
    assert net.hidden[0].online.delays == 1
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_refresh_previous_config_flags_and_old_runs(data_root, tmp_path, capsys):  # noqa: F811
    """--mode online refreshes by default, --stored-previous keeps the stored activity (the rates are the
    same either way); rates given stay as given; batch mode refuses the flags; an online run written
    before the option resumes with the stored activity (config upgraded)."""
    from threefactor.training.config import ONLINE_LR_LOCAL, resolve_config

    on = resolve_config(mode="online")
    assert on["refresh_previous"] is True and on["lr_local"] == ONLINE_LR_LOCAL and on["lr_out"] == 5e-3
    off = resolve_config(mode="online", refresh_previous=False)
    assert off["refresh_previous"] is False and (off["lr_local"], off["lr_out"]) == (ONLINE_LR_LOCAL, 5e-3)
    given = resolve_config(mode="online", lr_local=0.2, lr_out=1e-3)
    assert (given["lr_local"], given["lr_out"]) == (0.2, 1e-3)
    assert resolve_config()["refresh_previous"] is None
    with pytest.raises(ValueError, match=r"refresh_previous needs mode='online'"):
        resolve_config(refresh_previous=True)
    with pytest.raises(TypeError, match=r"refresh_previous must be True or False"):
        resolve_config(mode="online", refresh_previous="yes")
    base = ["train", "--dataset", "mnist", "--data-root", str(data_root), "--hidden", "16", "--grouping", "plain",
            "--mode", "online", "--streams", "32", "--epochs", "1", "--no-progress"]
    assert cli.main(base + ["--stored-previous", "--out", str(tmp_path / "s")]) == 0
    assert ", stored previous activity)" in capsys.readouterr().out          # the start line's online part
    assert json.loads((tmp_path / "s" / "config.json").read_text())["refresh_previous"] is False
    assert cli.main(base + ["--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["refresh_previous"] is True and ", stored previous activity)" not in capsys.readouterr().out
    old = {k: v for k, v in saved.items() if k != "refresh_previous"}         # written before the option
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--no-progress"]) == 0
    net = build_network(__import__("threefactor").training.naming.upgrade_config(old), 784, 10,
                        get_backend("numpy"), np.random.default_rng(0))
    assert net.hidden[0].online.refresh is False
    with pytest.raises(SystemExit):
        cli.main(["train", "--refresh-previous", "--epochs", "1", "--out", str(tmp_path / "b")])
    assert "refresh_previous needs mode='online'" in capsys.readouterr().err
