"""The Python training API (threefactor.nn.mlp.MLP, threefactor.nn.optim): bad input is refused with
an error that names the argument, and a batch of another dtype does not leave the net's dtype."""
import numpy as np
import pytest

import threefactor as tf
from threefactor.nn.mlp import MLP
from threefactor.nn.optim import SGD, AdamW


def _net(**kw):
    args = dict(backend=tf.get_backend("numpy"), rng=np.random.default_rng(0))
    args.update(kw)
    return MLP(20, [16], 4, tf.Rule(), **args)


def _batch(m=8, dtype=np.float32):
    x = np.random.default_rng(1).normal(size=(m, 20)).astype(dtype)
    return x, np.arange(m) % 4


@pytest.mark.parametrize("kw, error, match", [
    (dict(n_classes=1), ValueError, r"n_classes must be >= 2, got 1"),
    (dict(n_classes=2.5), TypeError, r"n_classes must be an int"),
    (dict(n_in=0), ValueError, r"n_in must be >= 1, got 0"),
    (dict(hidden=[0]), ValueError, r"hidden width must be >= 1, got 0"),
    (dict(hidden=16), ValueError, r"hidden must list at least one hidden width"),
    (dict(dtype=np.int32), TypeError, r"dtype must be float32 or float64, got int32"),
    (dict(dtype=np.float16), TypeError, r"dtype must be float32 or float64, got float16"),
])
def test_constructor_refuses_nonsense(kw, error, match):
    args = dict(n_in=20, hidden=[16], n_classes=4)
    args.update(kw)
    with pytest.raises(error, match=match):
        MLP(args.pop("n_in"), args.pop("hidden"), args.pop("n_classes"), tf.Rule(),
            backend=tf.get_backend("numpy"), rng=np.random.default_rng(0), **args)


def _bad(x, y, what):
    x, y = x.copy(), y.copy()
    if what == "nan":
        x[0, 0] = np.nan
    elif what == "inf":
        x[1, 2] = np.inf
    elif what == "negative label":
        y[0] = -1
    elif what == "label too large":
        y[0] = 4
    elif what == "float labels":
        y = y + 0.5
    elif what == "short labels":
        y = y[:5]
    elif what == "x columns":
        x = x[:, :10]
    elif what == "x 1-d":
        x = x[0]
    return x, y


@pytest.mark.parametrize("what, error, match", [
    ("nan", ValueError, r"x contains NaN or Inf"),
    ("inf", ValueError, r"x contains NaN or Inf"),
    ("negative label", ValueError, r"labels must be in \[0, n_classes\) = \[0, 4\), got values in \[-1, 3\]"),
    ("label too large", ValueError, r"labels must be in \[0, n_classes\)"),
    ("float labels", TypeError, r"labels must be integers"),
    ("short labels", ValueError, r"labels must have shape \(m,\) = \(8,\)"),
    ("x columns", ValueError, r"x must have shape \(m, n_in=20\), got \(8, 10\)"),
    ("x 1-d", ValueError, r"x must have shape \(m, n_in=20\), got \(20,\)"),
])
@pytest.mark.parametrize("learning", ["local", "backprop", "last-layer"])
def test_train_step_refuses_bad_batches_and_leaves_weights_alone(learning, what, error, match):
    net = _net(learning=learning)
    opts = net.make_optimizers(0.1, 0.1)
    before = {k: v.copy() for k, v in net.parameters().items()}
    x, y = _bad(*_batch(), what)
    with pytest.raises(error, match=match):
        net.train_step(x, y, opts, np.random.default_rng(0))
    for k, v in net.parameters().items():
        np.testing.assert_array_equal(v, before[k])


def test_evaluate_and_logits_check_their_inputs():
    net = _net()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"labels must be in \[0, n_classes\)"):
        net.evaluate(x, y - 1)                  # a negative label used to index from the end
    with pytest.raises(ValueError, match=r"x must have shape"):
        net.logits(x[:, :5])


def test_a_float64_batch_trains_a_float32_net_in_float32():
    net = _net(learning="backprop")
    opts = net.make_optimizers(0.1, 0.1)
    x, y = _batch(dtype=np.float64)
    stats = net.train_step(x, y, opts, np.random.default_rng(0))
    assert stats.loss.dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.parameters().values())
    # the same numbers as a float32 batch
    net2 = _net(learning="backprop")
    stats2 = net2.train_step(x.astype(np.float32), y, net2.make_optimizers(0.1, 0.1), np.random.default_rng(0))
    assert float(stats.loss) == float(stats2.loss)


def test_lists_are_accepted_as_a_batch():
    net = _net()
    x, y = _batch()
    net.train_step(x.tolist(), y.tolist(), net.make_optimizers(0.1, 0.1), np.random.default_rng(0))


@pytest.mark.parametrize("make, match", [
    (lambda p: AdamW(p, 0.1, weight_decay=-1.0), r"weight_decay must be a finite number >= 0, got -1.0"),
    (lambda p: AdamW(p, 0.1, weight_decay=float("nan")), r"weight_decay must be a finite number >= 0, got nan"),
    (lambda p: AdamW(p, 0.1, eps=0.0), r"eps must be a finite number > 0, got 0.0"),
    (lambda p: AdamW(p, 0.1, eps=float("nan")), r"eps must be a finite number > 0"),
    (lambda p: SGD(p, 0.1, weight_decay=float("nan")), r"weight_decay must be a finite number >= 0, got nan"),
    (lambda p: SGD(p, 0.1, weight_decay=-1e-3), r"weight_decay must be a finite number >= 0"),
])
def test_optimizers_refuse_nonsense_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make([np.zeros(3)])


def test_make_optimizers_names_a_bad_adamw_weight_decay():
    with pytest.raises(ValueError, match=r"weight_decay must be"):
        _net().make_optimizers(0.1, 0.1, weight_decay_out=-1e-6, optimizer="adamw")


def test_a_conv_net_checks_its_batches_too():
    """ConvNet borrowed MLP.logits/evaluate without a check of its own: a label of -1 indexed the last
    class and a wrongly shaped image failed deep inside im2col."""
    from threefactor.backends import get_backend
    from threefactor.nn.convnet import ConvNet
    from threefactor.rule.rules import Rule
    rng = np.random.default_rng(0)
    net = ConvNet((1, 8, 8), "conv4-pool-fc8", 3, Rule(groups=2), backend=get_backend("numpy"), rng=rng)
    opts = net.make_optimizers(0.1, 0.1)
    x, y = rng.normal(size=(6, 1, 8, 8)), np.array([0, 1, 2, 0, 1, 2])
    before = [p.copy() for p in net.parameters().values()]
    for bad_x, bad_y, match in ((x[:, :, :7], y, r"x must have shape \(m, C, H, W\) = \(m, 1, 8, 8\), got \(6, 1, 7, 8\)"),
                                (x, y - 1, r"labels must be in \[0, n_classes\) = \[0, 3\)"),
                                (np.where(x > 2, np.nan, x), y, r"x contains NaN or Inf")):
        with pytest.raises(ValueError, match=match):
            net.train_step(bad_x, bad_y, opts, rng)
        with pytest.raises(ValueError, match=match):
            net.evaluate(bad_x, bad_y)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.parameters().values()))   # nothing moved
    stats = net.train_step(x, y, opts, rng)                    # float64 batch, float32 net: cast, trains
    assert stats.loss.dtype == np.float32 and np.isfinite(stats.loss)
