"""Batchnorm (Table 7's AdamW + batchnorm variants): forward, hand-written gradient, the local
rule and backprop through it, running statistics, training and configuration."""
import json

import numpy as np
import pytest

from threefactor import Rule
from threefactor.verify import naive as pairwise
from threefactor.backends import BackendUnavailable, get_backend
from threefactor.nn.backprop import forward_backward, network_loss
from threefactor.rule.batchnorm import BatchNorm
from threefactor.verify.naive import batchnorm as naive_batchnorm
from threefactor.verify.gradcheck import complex_step_gradient
from threefactor.nn.convnet import TABLE6, ConvLayer, ConvNet
from threefactor.verify.naive import conv_objective as naive_objective
from threefactor.nn.layers import HiddenLayer
from threefactor.nn.mlp import MLP
from threefactor.training.report import find_runs, markdown_table, summarize
from threefactor.training.train import default_out, resolve_config, train

from test_train import _quiet
from test_train_conv import _data

NP = get_backend("numpy")
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=pytest.mark.gpu)]


def _backend(name):
    try:
        return get_backend(name)
    except (BackendUnavailable, ImportError) as exc:
        pytest.skip(f"{name} backend unavailable: {exc}")


def _rel(a, b):
    return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


def _bn(c, rng, backend=NP):
    """A BatchNorm with non-trivial γ, β (the initial 1, 0 would hide mistakes)."""
    bn = BatchNorm(c, backend, np.float64)
    bn.gamma[...] = backend.asarray(rng.uniform(0.5, 1.5, c))
    bn.beta[...] = backend.asarray(rng.normal(0, 0.3, c))
    return bn


# -- the layer itself -------------------------------------------------------------------

def test_forward_is_the_definition_and_vjp_the_gradient():
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 3.0, (9, 4))
    bn = _bn(4, rng)
    b, cache = bn.forward(a.copy())
    ref = naive_batchnorm(a, bn.gamma, bn.beta)
    np.testing.assert_allclose(b, ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(b.mean(0), bn.beta, atol=1e-12)                  # γ â + β: mean β
    np.testing.assert_allclose(b.std(0), bn.gamma * np.sqrt(a.var(0) / (a.var(0) + 1e-5)), rtol=1e-12)
    G = rng.normal(size=a.shape)                          # L = Σ G ⊙ BN(a; γ, β)
    ga, dgamma, dbeta = bn.vjp(cache, G)
    for got, f, at in [(ga, lambda v: (G * naive_batchnorm(v, bn.gamma, bn.beta)).sum(), a),
                       (dgamma, lambda v: (G * naive_batchnorm(a, v, bn.beta)).sum(), bn.gamma),
                       (dbeta, lambda v: (G * naive_batchnorm(a, bn.gamma, v)).sum(), bn.beta)]:
        assert _rel(got, -complex_step_gradient(f, at)) < 1e-12


def test_running_statistics_and_eval_mode():
    rng = np.random.default_rng(1)
    bn = _bn(3, rng)
    batches = [rng.normal(1.0, 2.0, (6, 3)) for _ in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for a in batches:
        _, cache = bn.forward(a)
        bn.track(cache)
        mean = 0.9 * mean + 0.1 * a.mean(0)
        var = 0.9 * var + 0.1 * a.var(0, ddof=1)           # unbiased, as PyTorch keeps it
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-14)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-14)
    x = rng.normal(size=(2, 3))
    b, cache = bn.forward(x, train=False)
    assert cache is None
    np.testing.assert_allclose(b, (x - mean) / np.sqrt(var + 1e-5) * bn.gamma + bn.beta, rtol=1e-13)


def test_matches_torch_batchnorm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    bn = _bn(5, rng)
    tbn = torch.nn.BatchNorm1d(5, dtype=torch.float64)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(bn.gamma))
        tbn.bias.copy_(torch.tensor(bn.beta))
    for _ in range(3):
        a = rng.normal(0.5, 2.0, (7, 5))
        b, cache = bn.forward(a)
        bn.track(cache)
        at = torch.tensor(a, requires_grad=True)
        bt = tbn(at)
        G = rng.normal(size=a.shape)
        (bt * torch.tensor(G)).sum().backward()
        np.testing.assert_allclose(b, bt.detach().numpy(), rtol=1e-12, atol=1e-12)
        ga, dgamma, dbeta = bn.vjp(cache, G)
        np.testing.assert_allclose(ga, at.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dgamma, tbn.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(dbeta, tbn.bias.grad.numpy(), rtol=1e-10)
        tbn.weight.grad = tbn.bias.grad = None
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
    tbn.eval()
    x = rng.normal(size=(3, 5))
    np.testing.assert_allclose(bn.forward(x, train=False)[0], tbn(torch.tensor(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("kwargs,match", [(dict(momentum=0.0), "momentum must be in"),
                                          (dict(momentum=1.5), "momentum must be in"),
                                          (dict(eps=0.0), "eps must be > 0"),
                                          (dict(eps=float("nan")), "eps must be > 0")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm(4, NP, **kwargs)


def test_one_row_batch_is_an_error():
    with pytest.raises(ValueError, match="at least 2 rows"):
        BatchNorm(3, NP, np.float64).forward(np.ones((1, 3)))


# -- the local rule through batchnorm: ΔW, Δγ, Δβ = -dL/d(W, γ, β) -----------------------

RULES = {
    "gaussian": Rule(sigma=2.0, activation="lrelu"),
    "gaussian-grpdiv": Rule(sigma=2.0, activation="lrelu", groups=3, p=0.2),
    "cossim-grp": Rule(kernel="cosine", activation="selu", groups=3, p=0.5),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(RULES))
def test_dense_local_rule_through_batchnorm_is_the_gradient(name, backend):
    rule = RULES[name]
    be = _backend(backend)
    rng = np.random.default_rng(3)
    m, n_in, n_out, k = 8, 5, 6, 3
    x = rng.normal(size=(m, n_in))
    w = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
    y = np.arange(m) % k
    bn = _bn(n_out, rng, be)
    g0, b0 = be.to_numpy(bn.gamma).copy(), be.to_numpy(bn.beta).copy()
    eye = np.eye(n_out)

    def loss(w_, g_, b_):
        return pairwise.objective(naive_batchnorm(x @ w_.T, g_, b_), eye, y, k, rule)

    layer = HiddenLayer(be.asarray(w.copy()), rule, divisive=rule.grouped, bn=bn)
    _, deltas, _ = layer.local_forward(be.asarray(x), be.asarray(y), k, be)
    refs = [complex_step_gradient(lambda v: loss(v, g0, b0), w),
            complex_step_gradient(lambda v: loss(w, v, b0), g0),
            complex_step_gradient(lambda v: loss(w, g0, v), b0)]
    assert len(deltas) == 3
    for got, ref in zip(deltas, refs):
        assert _rel(be.to_numpy(got), ref) < 1e-10
    assert not np.allclose(refs[2], 0)                        # β matters (grouping centres, kernels don't)
    np.testing.assert_allclose(be.to_numpy(bn.running_mean), 0.1 * (x @ w.T).mean(0), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pool", [None, "max"])
@pytest.mark.parametrize("name", ["gaussian-grpdiv", "cossim-grp"])
def test_conv_local_rule_through_batchnorm_is_the_gradient(name, pool, backend):
    rule = RULES[name]
    be = _backend(backend)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 2, 4, 4))
    w = rng.normal(size=(6, 2, 3, 3)) / np.sqrt(18)
    y = np.array([0, 1, 2, 0])
    bn = _bn(6, rng, be)
    g0, b0 = be.to_numpy(bn.gamma).copy(), be.to_numpy(bn.beta).copy()
    layer = ConvLayer(be.asarray(w.copy()), rule, divisive=True, pool=pool, in_hw=(4, 4), bn=bn)
    _, deltas, _ = layer.local_forward(be.asarray(x), be.asarray(y), 3, be)

    def loss(w_, g_, b_):
        return naive_objective(x, w_, y, 3, rule, 1, pool, bn=(g_, b_))

    refs = [complex_step_gradient(lambda v: loss(v, g0, b0), w),
            complex_step_gradient(lambda v: loss(w, v, b0), g0),
            complex_step_gradient(lambda v: loss(w, g0, v), b0)]
    for got, ref in zip(deltas, refs):
        assert got.shape == ref.shape and _rel(be.to_numpy(got), ref) < 1e-10


# -- backprop through batchnorm -----------------------------------------------------------

def test_mlp_backprop_through_batchnorm_is_the_gradient():
    rng = np.random.default_rng(5)
    net = MLP(5, [6, 6], 3, Rule(groups=2), divisive=True, learning="backprop", dropout=0.0, backend=NP,
              dtype=np.float64, rng=rng, batchnorm=True)
    for layer in net.hidden:
        layer.bn.gamma[...] = rng.uniform(0.5, 1.5, 6)
        layer.bn.beta[...] = rng.normal(0, 0.3, 6)
    x, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    masks = [None, None]
    _, _, hidden, out = forward_backward(net, x, y, masks, NP)
    grads = dict(zip(net.parameters(), [g for gs in hidden for g in gs] + out))
    assert {"hidden.0.bn_gamma", "hidden.1.bn_beta"} <= set(grads)
    for name, p in net.parameters().items():
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + 1e-6
            lp = float(network_loss(net, x, y, masks, NP))
            p[idx] = old - 1e-6
            lm = float(network_loss(net, x, y, masks, NP))
            p[idx] = old
            assert np.isclose(grads[name][idx], (lp - lm) / 2e-6, rtol=1e-6, atol=1e-10), (name, idx)


def test_convnet_backprop_through_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    net = ConvNet((2, 6, 6), "conv4-pool-fc6", 3, Rule(activation="lrelu"), learning="backprop", dropout=0.0,
                  backend=NP, dtype=np.float64, rng=rng, batchnorm=True)
    for layer in net.hidden:
        layer.bn.gamma[...] = rng.uniform(0.5, 1.5, layer.bn.gamma.shape)
        layer.bn.beta[...] = rng.normal(0, 0.3, layer.bn.beta.shape)
    x, y = rng.normal(size=(5, 2, 6, 6)), np.array([0, 1, 2, 0, 1])
    _, _, hidden, out = net.forward_backward(x, y, [(None, None)] * 2)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in net.parameters().items()}
    P = params
    h = F.conv2d(torch.tensor(x), P["hidden.0.w"], padding=1)
    h = F.batch_norm(h, None, None, P["hidden.0.bn_gamma"], P["hidden.0.bn_beta"], training=True, eps=1e-5)
    h = F.max_pool2d(F.leaky_relu(h, 0.01), 2).reshape(5, -1)
    h = F.batch_norm(h @ P["hidden.1.w"].T, None, None, P["hidden.1.bn_gamma"], P["hidden.1.bn_beta"],
                     training=True, eps=1e-5)
    h = F.leaky_relu(h, 0.01)
    F.cross_entropy(h @ P["output.w"].T + P["output.b"], torch.tensor(y)).backward()
    for (name, p), g in zip(params.items(), [g for gs in hidden for g in gs] + out):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


# -- networks, training, configuration ---------------------------------------------------

def test_eval_uses_running_statistics_and_checkpoint_holds_them(tmp_path):
    cfg = resolve_config(arch="conv4-pool-conv8-pool-fc16", dataset="mnist", rule="gaussian",
                         grouping="grp+div", groups=2, batchnorm=True, epochs=3, batch_size=32,
                         backend="numpy", lr_local=5e-3, lr_out=5e-3)
    assert (cfg["optimizer"], cfg["activation"], cfg["plausible"]) == ("adamw", "lrelu", False)
    assert cfg["preset"] == "cifar10-vgg-bn-gaussian-grpdiv" and cfg["milestones"] == [300, 350, 450, 475]
    assert default_out(cfg).name.startswith("mnist-conv-bn-gaussian-grpdiv-s0-")
    data = _data()
    rd = train(cfg, tmp_path / "full", progress=False, log=_quiet, data=data)
    records = rd.read_metrics()
    assert records[-1]["test_accuracy"] >= 60.0, records        # chance is 25%
    params, _, _ = rd.load_checkpoint()
    for k in range(3):
        assert {f"hidden.{k}.bn_{s}" for s in ("gamma", "beta", "mean", "var")} <= set(params)
        assert not np.allclose(params[f"hidden.{k}.bn_mean"], 0)          # statistics were tracked
        assert not np.allclose(params[f"hidden.{k}.bn_gamma"], 1)         # γ learned by the local rule
    part = train(dict(cfg, epochs=1), tmp_path / "part", progress=False, log=_quiet, data=data)
    train(cfg, part.path, resume=True, progress=False, log=_quiet, data=data)
    again, _, _ = part.load_checkpoint()
    assert again.keys() == params.keys() and all(np.array_equal(again[k], params[k]) for k in params)
    # evaluation normalises with the running statistics, not the test batch's own
    from threefactor.training.train import build_network
    net = build_network(cfg, (1, 12, 12), 4, NP, np.random.default_rng(0))
    net.load_parameters(params)
    xt = data[2][:50]
    one = net.logits(xt[:1])
    np.testing.assert_allclose(one, net.logits(xt)[:1], rtol=1e-5, atol=1e-6)
    rows = markdown_table(summarize(find_runs([tmp_path / "full"])))
    assert "batchnorm" in rows


def test_bn_presets_resolve():
    bn = sorted(n for n in TABLE6 if "-bn-" in n)
    assert len(bn) == 12
    cfg = resolve_config(preset="cifar10-vgg2x-bn-gaussian-grp", backend="numpy")
    assert (cfg["lr_out"], cfg["lr_local"], cfg["groups"], cfg["p"], cfg["width"]) == (5e-4, 5e-3, 128, 0.5, 2)
    assert (cfg["batchnorm"], cfg["optimizer"], cfg["activation"], cfg["dropout"]) == (True, "adamw", "lrelu", 0.05)
    bp = resolve_config(preset="cifar10-vgg-bn-backprop", backend="numpy")
    assert bp["milestones"] == [300, 350, 450, 475] and bp["lr_out"] == 5e-3 and not bp["plausible"]
    sgd = resolve_config(preset="cifar10-vgg-gaussian-grpdiv", backend="numpy")
    assert sgd["plausible"] and not sgd["batchnorm"]
    json.dumps(cfg)


@pytest.mark.parametrize("options,match", [
    (dict(batchnorm=True, mode="online"), "cannot use batchnorm"),
    (dict(batchnorm=True, rule="last-layer", grouping="plain"), "nothing to learn"),
    (dict(batchnorm=1), "batchnorm must be True or False"),
    (dict(preset="cifar10-vgg-gaussian-grpdiv", batchnorm=True), "contradicts preset"),
])
def test_bad_batchnorm_options_are_named(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resolve_config(backend="numpy", **options)


def test_mlp_with_batchnorm_trains_and_cli_flag(tmp_path, capsys):
    from threefactor.cli import main as cli
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="nothing to learn"):
        MLP(4, [4], 2, Rule(), learning="last-layer", backend=NP, rng=rng, batchnorm=True)
    parser_help = pytest.raises(SystemExit)
    with parser_help:
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--batchnorm" in text and "cifar10-vgg-bn-gaussian-grpdiv" in text


@pytest.mark.gpu
@pytest.mark.parametrize("rule,grouping", [("gaussian", "grp+div"), ("backprop", "plain")])
def test_cupy_batchnorm_net_trains_like_numpy(tmp_path, rule, grouping):
    _backend("cupy")
    cfg = resolve_config(arch="conv4-pool-conv8-pool-fc16", dataset="mnist", rule=rule, grouping=grouping,
                         batchnorm=True, epochs=2, batch_size=32, backend="cupy", dtype="float64",
                         lr_out=5e-3, dropout=0.0,   # the GPU makes its dropout masks by hashing: no masks here
                         **({"groups": 2, "lr_local": 5e-3} if rule == "gaussian" else {}))
    data = _data()
    gpu = train(cfg, tmp_path / "gpu", progress=False, log=_quiet, data=data)
    cpu = train(dict(cfg, backend="numpy"), tmp_path / "cpu", progress=False, log=_quiet, data=data)
    a, b = gpu.load_checkpoint()[0], cpu.load_checkpoint()[0]
    assert a.keys() == b.keys() and "hidden.2.bn_var" in a
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9, err_msg=k)
    assert gpu.read_metrics()[-1]["test_accuracy"] == pytest.approx(cpu.read_metrics()[-1]["test_accuracy"],
                                                                   abs=1.0)


# -- threefactor check --batchnorm ---------------------------------------------------------

def test_check_batchnorm_matrix_passes_and_catches_a_wrong_gradient(monkeypatch):
    from threefactor.verify.variants import check_batchnorm_all
    results = check_batchnorm_all(backends=("numpy", "numba"), activations=("lrelu", "selu"))
    assert len(results) == 3 * 3 * 2 * 2 * 3 * 2       # kernel x grouping x act x kind x param x backend
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert max(r.max_rel_error for r in results) < 1e-12
    real = BatchNorm.vjp

    def wrong(self, cache, g):                       # forgets the mean of g in dL/da
        ga, dgamma, dbeta = real(self, cache, g)
        return ga + g.mean(axis=0) * self.gamma * cache.inv_std, dgamma, dbeta
    monkeypatch.setattr(BatchNorm, "vjp", wrong)
    bad = check_batchnorm_all(backends=("numpy",), kernels=("gaussian",), groupings=("grp+div",))
    assert [r.passed for r in bad if r.variant.endswith(": W")] == [False, False]
    assert all(r.passed for r in bad if not r.variant.endswith(": W"))


def test_check_cli_batchnorm_flag(tmp_path, capsys):
    from threefactor.cli import main as cli
    out = tmp_path / "check.json"
    rc = cli.main(["check", "--batchnorm", "--no-conv", "--kernel", "cosine", "--grouping", "grp",
                   "--activation", "lrelu", "--method", "complex", "--backend", "numpy", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "bn/dense/cosine/grp/lrelu: gamma" in text and "bn/conv" not in text
    data = json.loads(out.read_text())
    assert data["meta"]["batchnorm"] is True
    assert sum(r["variant"].startswith("bn/") for r in data["results"]) == 3
