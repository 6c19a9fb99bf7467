"""`threefactor train --mode online`: the two-point rule in time drives the MLP's hidden layers."""
import numpy as np
import pytest

from threefactor.cli import main as cli
from threefactor.training.train import ONLINE_LR_LOCAL, build_network, resolve_config, train

from test_train import _config, _quiet, data_root  # noqa: F401  (fixture)


def _online(data_root, **kw):
    # per-sample rates (the default rate_rule): a step of 32 streams uses lr x 32/256, i.e. lr_local 0.2
    # and lr_out 0.05 per step, the rates these tests used before rates were per sample
    opts = dict(mode="online", streams=32, lr_local=1.6, lr_out=0.4, epochs=4)
    opts.update(kw)
    return _config(data_root, "gaussian", "grp+div", **opts)


def test_online_mode_learns_and_moves_weights(data_root, tmp_path):  # noqa: F811
    cfg = _online(data_root)
    assert cfg["batch_size"] == cfg["streams"] == 32
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    records = rd.read_metrics()
    assert records[-1]["test_accuracy"] >= 50.0, records          # chance is 10%
    init = build_network(cfg, 784, 10, __import__("threefactor").get_backend("numpy"),
                         np.random.default_rng(cfg["seed"])).parameters()
    params, _, _ = rd.load_checkpoint()
    for k in range(2):
        assert not np.array_equal(params[f"hidden.{k}.w"], init[f"hidden.{k}.w"])
    assert "param/online/0/b3" not in params and "online/0/b3" in params   # streams' state saved


def test_online_resume_is_bit_for_bit(data_root, tmp_path):  # noqa: F811
    cfg = _online(data_root, epochs=2, dropout=0.1)
    full = train(cfg, tmp_path / "full", progress=False, log=_quiet)
    part = train(dict(cfg, epochs=1), tmp_path / "part", progress=False, log=_quiet)
    train(dict(cfg, epochs=2), part.path, resume=True, progress=False, log=_quiet)
    a, _, _ = full.load_checkpoint()
    b, _, _ = part.load_checkpoint()
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_online_defaults_and_bad_options(data_root):  # noqa: F811
    cfg = _config(data_root, "gaussian", "grp+div", mode="online")
    assert cfg["lr_local"] == ONLINE_LR_LOCAL and cfg["streams"] == cfg["batch_size"]
    assert cfg["refresh_previous"] is True
    with pytest.raises(ValueError, match=r"mode='online' needs rule='gaussian'"):
        _config(data_root, "cossim", "plain", mode="online")
    with pytest.raises(ValueError, match=r"mode='walk' is not one of: batch, online"):
        _config(data_root, "gaussian", "plain", mode="walk")
    with pytest.raises(ValueError, match=r"streams needs mode='online'"):
        _config(data_root, "gaussian", "plain", streams=8)
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\]"):
        _online(data_root, beta=0.0)
    with pytest.raises(ValueError, match=r"streams and batch_size disagree"):
        _online(data_root, batch_size=16)


def test_cli_help_mentions_online(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--mode" in out and "--streams" in out and "Eq. 13" in out


@pytest.mark.gpu
def test_online_mode_on_the_gpu_matches_numpy(data_root, tmp_path):  # noqa: F811
    """`--mode online --backend cupy`: the streams' circuit state on the device, the same weights as numpy
    (no dropout: the GPU hashes its masks), and seeded runs repeat bit for bit with dropout."""
    from threefactor.backends import BackendUnavailable, get_backend
    try:
        get_backend("cupy")
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(str(exc))
    cfg = _online(data_root, epochs=1, subset=96, backend="cupy", dtype="float64", dropout=0.0)
    gpu = train(cfg, tmp_path / "gpu", progress=False, log=_quiet)
    cpu = train(dict(cfg, backend="numpy"), tmp_path / "cpu", progress=False, log=_quiet)
    a, b = gpu.load_checkpoint()[0], cpu.load_checkpoint()[0]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9, err_msg=k)
    cfg = dict(cfg, dropout=0.1)
    c = train(cfg, tmp_path / "c", progress=False, log=_quiet).load_checkpoint()[0]
    d = train(cfg, tmp_path / "d", progress=False, log=_quiet).load_checkpoint()[0]
    for k in c:
        assert np.array_equal(c[k], d[k]), k


# -- the batch size must be the number of streams ------------------------------------------------
@pytest.mark.parametrize("extra", [["--streams", "400"], ["--streams", "256", "--subset", "100"]])
def test_more_streams_than_training_samples_is_refused(data_root, tmp_path, extra):  # noqa: F811
    """No step would be full, so the hidden layers would never learn: an error naming --streams, before
    any training (it once exited 0 with a checkpoint holding no online state)."""
    out = tmp_path / "run"
    argv = ["train", "--dataset", "mnist", "--hidden", "32", "32", "--groups", "8", "--mode", "online",
            "--epochs", "1", "--data-root", str(data_root), "--backend", "numpy", "--no-progress",
            "--out", str(out), *extra]
    with pytest.raises(SystemExit, match=r"streams=\d+ \(--streams\) is more than the \d+ training samples"):
        cli.main(argv)
    assert not (out / "checkpoint.npz").exists()


def test_short_last_batch_is_dropped_and_hidden_layers_learn(data_root, tmp_path):  # noqa: F811
    """100 samples in streams of 32: three full steps and a last batch of 4 the hidden layers pass
    through; they learn from the full ones and the streams' state is saved."""
    cfg = _online(data_root, epochs=2, subset=100)
    rd = train(cfg, tmp_path / "run", progress=False, log=_quiet)
    init = build_network(cfg, 784, 10, __import__("threefactor").get_backend("numpy"),
                         np.random.default_rng(cfg["seed"])).parameters()
    params, _, _ = rd.load_checkpoint()
    assert "online/0/b3" in params and "online/1/b3" in params
    # weight decay alone (1e-7 at lr 0.2, 6 steps, momentum) moves them by < 1e-7; learning by > 2e-5
    for k in range(2):
        change = np.abs(params[f"hidden.{k}.w"] - init[f"hidden.{k}.w"]).max()
        assert change > 1e-6, (k, change)


def _small_online_net(streams):
    from threefactor import Rule, get_backend
    from threefactor.nn.mlp import MLP
    from threefactor.nn.online_layer import make_online
    rng = np.random.default_rng(0)
    net = MLP(20, [16], 4, Rule(sigma=2.0, gamma=2.0, groups=4), dropout=0.0,
              backend=get_backend("numpy"), rng=rng)
    make_online(net, streams=streams)
    return net, net.make_optimizers(0.1, 0.05), rng


@pytest.mark.parametrize("sizes", [[64], [16], [32, 16, 16], [32, 64]])
def test_train_step_refuses_batches_that_are_not_the_streams(sizes):
    """make_online(net, streams=32) then batches of another size: a ValueError naming streams (it once
    changed the hidden weights by weight decay only, without a word).  A short batch is taken only
    right after a full one (an epoch's last)."""
    net, opts, rng = _small_online_net(32)
    x = rng.standard_normal((64, 20)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    w0 = net.hidden[0].w.copy()
    for m in sizes[:-1]:
        net.train_step(x[:m], y[:m], opts, rng)
    w1 = net.hidden[0].w.copy()
    with pytest.raises(ValueError, match=rf"a batch of {sizes[-1]} samples, but the online layer steps "
                                         r"streams=32 streams"):
        net.train_step(x[:sizes[-1]], y[:sizes[-1]], opts, rng)
    assert np.array_equal(net.hidden[0].w, w1)          # refused before any weight moved
    if len(sizes) == 1:
        assert np.array_equal(w1, w0)


def test_short_batch_after_a_full_one_passes_through():
    net, opts, rng = _small_online_net(32)
    x = rng.standard_normal((96, 20)).astype(np.float32)
    y = rng.integers(0, 4, 96)
    for _ in range(2):                                  # two "epochs" of 32 + 32 + 8
        for s, e in ((0, 32), (32, 64), (64, 72)):
            net.train_step(x[s:e], y[s:e], opts, rng)
    assert net.hidden[0].online.t == 4                  # only the full batches stepped the streams


def test_streams_equal_to_the_training_set_is_one_step_an_epoch(data_root, tmp_path):  # noqa: F811
    """One step an epoch: after epoch 1 there is no pair yet (no b3), and the checkpoint must still
    save, load and resume (b3 was saved as an object array holding None)."""
    cfg = _online(data_root, epochs=2, subset=32)
    full = train(cfg, tmp_path / "full", progress=False, log=_quiet)
    part = train(dict(cfg, epochs=1), tmp_path / "part", progress=False, log=_quiet)
    assert part.load_checkpoint()[0]["online/0/b3"].shape == (0,)
    train(cfg, part.path, resume=True, progress=False, log=_quiet)
    a, b = full.load_checkpoint()[0], part.load_checkpoint()[0]
    assert a["online/0/b3"].shape == (32,) or a["online/0/b3"].shape == ()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_start_line_names_the_online_settings():
    """The run's first line: '1 stream' (not '1 streams'), the pairs per sample ('1 pair', '2 pairs'), and
    the rate rule and per-stream b3 when they are not the defaults."""
    from types import SimpleNamespace

    from threefactor.training.naming import start_line
    from threefactor.training.train import resolve_config
    rd = SimpleNamespace(path="runs/x")
    line = start_line(resolve_config(mode="online", streams=1, backend="numpy"), rd, False)
    assert "online (1 stream, beta 0.01, 2 pairs per sample)" in line, line
    line = start_line(resolve_config(mode="online", streams=7, rate_rule="per-step", delays=1, shared_b3=False,
                                     backend="numpy"), rd, False)
    assert "online (7 streams, beta 0.01, b3 per stream, per-step rates, 1 pair per sample)" in line, line


def test_online_fmnist_script_trains_what_train_mode_online_trains(data_root, tmp_path, capsys):  # noqa: F811
    """benchmarks/online_fmnist.py is `threefactor train --mode online` with the older script's options:
    per-sample rates (not the per-step rates it used before issue 18), the same config as the command."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "online_fmnist.py"
    spec = importlib.util.spec_from_file_location("online_fmnist", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    common = ["--dataset", "mnist", "--grouping", "plain", "--hidden", "16", "--batch-size", "32",
              "--data-root", str(data_root), "--epochs", "1"]
    assert mod.main(common + ["--out", str(tmp_path / "script")]) == 0
    printed = capsys.readouterr().out
    assert "threefactor train --dataset mnist" in printed and "--mode online --streams 32" in printed
    cfg = json.loads((tmp_path / "script" / "config.json").read_text())
    assert cfg["mode"] == "online" and cfg["rate_rule"] == "per-sample" and cfg["streams"] == 32
    assert cli.main(["train", "--dataset", "mnist", "--grouping", "plain", "--hidden", "16", "--mode", "online",
                     "--streams", "32", "--data-root", str(data_root), "--epochs", "1", "--seed", "0",
                     "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    same = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k != "out"} == {k: v for k, v in same.items() if k != "out"}
    assert mod.main(common + ["--batch-mode", "--print-command"]) == 0
    assert "--mode" not in capsys.readouterr().out


def test_probe_features_scores_a_runs_features_apart_from_its_readout(data_root, tmp_path, capsys):  # noqa: F811
    """benchmarks/probe_features.py: the run's own read-out scores what the run reported; a fresh probe on
    the frozen features and the own read-out trained on are reported, deterministic for a seed."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "probe_features", Path(__file__).resolve().parent.parent / "benchmarks" / "probe_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rd = train(_online(data_root, epochs=2), tmp_path / "run", progress=False, log=_quiet)
    reported = rd.read_metrics()[-1]["test_accuracy"]
    assert mod.main([str(rd.path), "--epochs", "40", "--catch-up", "2", "--json", str(tmp_path / "p.json")]) == 0
    (r,) = json.loads((tmp_path / "p.json").read_text())["runs"]
    assert r["epoch"] == 2 and abs(r["own"] - reported) <= 1.0, (r, reported)
    assert len(r["catch_up"]) == 2 and r["probe"] > r["own"] + 10 and r["feature_rms"] > 0, r   # chance: 10 %
    again = mod.probe_run(rd.path, epochs=40, catch_up=2)
    assert (again["probe"], again["catch_up"]) == (r["probe"], r["catch_up"])
    assert "own %" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main([str(rd.path), "--epochs", "0"])
    assert "argument --epochs: the probe's epochs must be >= 1" in capsys.readouterr().err
