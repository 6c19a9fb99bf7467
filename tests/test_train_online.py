"""`threefactor train --mode online`: the two-point rule in time drives the MLP's hidden layers."""
import numpy as np
import pytest

from threefactor import cli
from threefactor.train import ONLINE_LR_LOCAL, build_network, resolve_config, train

from test_train import _config, _quiet, data_root  # noqa: F401  (fixture)


def _online(data_root, **kw):
    opts = dict(mode="online", streams=32, lr_local=0.2, epochs=4)
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
