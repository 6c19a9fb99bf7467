"""The hand-written backward pass equals float64 finite differences of the network loss."""
import numpy as np
import pytest

from threefactor.nn import backprop
from threefactor.backends import get_backend
from threefactor.rule.grouping import divisive_norm, group_stats
from threefactor.nn.dropout import dropout_mask
from threefactor.nn.layers import softmax_cross_entropy
from threefactor.nn.mlp import MLP
from threefactor.rule.rules import Rule

BE = get_backend("numpy")


def _net(divisive, activation="lrelu", seed=0):
    rng = np.random.default_rng(seed)
    rule = Rule(kernel="gaussian", activation=activation, slope=0.01,
                groups=2 if divisive else None, p=0.2, delta=1.0)
    net = MLP(5, [8, 6], 3, rule, divisive=divisive, learning="backprop", dropout=0.3,
              backend=BE, dtype=np.float64, rng=rng)
    x = rng.standard_normal((7, 5))
    y = rng.integers(0, 3, 7)
    masks = [dropout_mask(BE, rng, (7, layer.shape[0]), 0.3, np.float64) for layer in net.hidden]
    return net, x, y, masks


def _finite_differences(net, x, y, masks, eps=1e-6):
    grads = {}
    for name, p in net.parameters().items():
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            lp = float(backprop.network_loss(net, x, y, masks, BE))
            p[idx] = old - eps
            lm = float(backprop.network_loss(net, x, y, masks, BE))
            p[idx] = old
            g[idx] = (lp - lm) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("divisive", [False, True], ids=["plain", "grp+div"])
@pytest.mark.parametrize("activation", ["lrelu", "selu", "linear"])
@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "dropout"])
def test_backward_equals_finite_differences(divisive, activation, dropout):
    net, x, y, masks = _net(divisive, activation)
    if not dropout:
        masks = [None] * len(masks)
    else:
        assert any((m == 0).any() for m in masks)   # the fixed mask really drops units
    loss, _, hidden, out = backprop.forward_backward(net, x, y, masks, BE)
    analytic = dict(zip(net.parameters(), [g for gs in hidden for g in gs] + out))
    numeric = _finite_differences(net, x, y, masks)
    assert float(loss) == pytest.approx(float(backprop.network_loss(net, x, y, masks, BE)), rel=1e-12)
    for name, g in numeric.items():
        err = np.abs(analytic[name] - g).max() / max(np.abs(g).max(), 1e-12)
        assert err < 1e-6, f"{name}: max rel error {err:.2e}"


def test_divisive_norm_jvp_vjp():
    """JVP matches finite differences of r = ẑ/u^p, and VJP is its transpose."""
    rng = np.random.default_rng(1)
    m, n, c, p, delta = 4, 12, 3, 0.2, 1.0

    def r_of(z):
        zhat, u, _ = group_stats(z, c, p, delta)
        return divisive_norm(zhat, u, p)

    z = rng.standard_normal((m, n))
    t = rng.standard_normal((m, n))
    gr = rng.standard_normal((m, n))
    zhat, u, _ = group_stats(z, c, p, delta)
    eps = 1e-6
    numeric = (r_of(z + eps * t) - r_of(z - eps * t)) / (2 * eps)
    jvp = backprop.divisive_norm_jvp(t, zhat, u, p)
    np.testing.assert_allclose(jvp, numeric, rtol=1e-7, atol=1e-9)
    vjp = backprop.divisive_norm_vjp(gr, zhat, u, p)
    assert np.sum(vjp * t) == pytest.approx(np.sum(gr * jvp), rel=1e-12)


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 4)) * 3
    y = rng.integers(0, 4, 6)
    loss, d, correct = softmax_cross_entropy(logits.copy(), y)
    ref = -np.mean(np.log(np.exp(logits)[np.arange(6), y] / np.exp(logits).sum(1)))
    assert float(loss) == pytest.approx(ref, rel=1e-12)
    assert int(correct) == int((logits.argmax(1) == y).sum())
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (5, 3)]:
        lp, lm = logits.copy(), logits.copy()
        lp[i, j] += eps
        lm[i, j] -= eps
        fd = (float(softmax_cross_entropy(lp, y)[0]) - float(softmax_cross_entropy(lm, y)[0])) / (2 * eps)
        assert d[i, j] == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_backward_matches_torch_autograd():
    """Optional oracle: torch autograd on the same float64 network."""
    torch = pytest.importorskip("torch")
    net, x, y, masks = _net(True)
    _, _, hidden, out = backprop.forward_backward(net, x, y, masks, BE)
    ws = [torch.tensor(layer.w, requires_grad=True) for layer in net.hidden]
    wo = torch.tensor(net.output.w, requires_grad=True)
    bo = torch.tensor(net.output.b, requires_grad=True)
    h = torch.tensor(x)
    for w, mask in zip(ws, masks):
        z = torch.nn.functional.leaky_relu(h @ w.T, 0.01)
        zg = z.view(z.shape[0], 2, -1)
        zc = zg - zg.mean(-1, keepdim=True)
        u = ((zc ** 2).sum(-1) + 1.0) / zc.shape[-1]
        h = (zc / u[..., None] ** 0.2).reshape(z.shape) * torch.tensor(mask)
    loss = torch.nn.functional.cross_entropy(h @ wo.T + bo, torch.tensor(y))
    loss.backward()
    for k, w in enumerate(ws):
        np.testing.assert_allclose(hidden[k][0], w.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out[0], wo.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out[1], bo.grad.numpy(), rtol=1e-10, atol=1e-13)
