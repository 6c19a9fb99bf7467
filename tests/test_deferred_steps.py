"""The online rule's SGD step deferred to the layer's next forward pass (one pass over W per sample).

``Network.deferred_steps`` (used by ``threefactor train`` for each epoch) leaves each online hidden
layer's step pending (``SGD.step(defer=True)``, a ``PendingStep``) and the layer takes it before it
next reads W: fused with its forward product where the Numba backend can
(``_online_kernels.sgd_low_rank_forward``), else as the step it would have taken at once.
"""
import numpy as np
import pytest

from threefactor import Rule, get_backend
from threefactor.nn.mlp import MLP
from threefactor.nn.online_layer import make_online
from threefactor.nn.optim import SGD, PendingStep
from threefactor.rule.online import TwoPointUpdate

numba = pytest.importorskip("numba")


# -- the kernel ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("R, m", [(3, 3), (2, 2), (3, 1), (2, 1), (6, 6), (0, 3), (5, 4)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("serial", [True, False])
def test_fused_step_and_products_equal_the_step_then_the_product(R, m, dtype, serial):
    """sgd_low_rank_forward leaves W and its buffer as sgd_low_rank does and returns x Wᵀ with the new
    W: float64 to 1e-13, float32 to float32 rounding.  (3, 3) and (2, 2) are the single-loop rows
    (B = 1, two pairs / one pair, refreshed; fused multiply-adds allowed, so W too differs by rounding);
    the others take sgd_low_rank's step of the row, then multiply."""
    from threefactor.backends import _online_kernels as kern
    rng = np.random.default_rng(R * 10 + m)
    t = dtype
    w = rng.standard_normal((257, 300)).astype(dtype)
    buf = rng.standard_normal(w.shape).astype(dtype)
    ut, pre = rng.standard_normal((257, R)).astype(dtype), rng.standard_normal((R, 300)).astype(dtype)
    x = rng.standard_normal((m, 300)).astype(dtype)
    args = (t(-1), t(1e-3), t(0.95), t(0.05))
    w_ref, buf_ref = w.copy(), buf.copy()
    kern.sgd_low_rank_serial(w_ref, buf_ref, ut, pre, *args)
    a_ref = x.astype(np.float64) @ w_ref.T.astype(np.float64)
    a = np.full((m, 257), np.nan, dtype)
    (kern.sgd_low_rank_forward_serial if serial else kern.sgd_low_rank_forward)(w, buf, ut, pre, *args, x, a)
    tight = dict(rtol=1e-13, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(w, w_ref, **tight)
    np.testing.assert_allclose(buf, buf_ref, **tight)
    scale = np.abs(a_ref).max()
    assert np.abs(a - a_ref).max() <= (1e-13 if dtype == np.float64 else 3e-6) * scale


def test_backend_fuses_only_what_it_can():
    """NumbaBackend.sgd_low_rank_forward returns a for a low-rank step and a few rows of x of W's dtype,
    None (W untouched) otherwise; the numpy backend fuses nothing."""
    be = get_backend("numba")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 30))
    buf = np.zeros_like(w)
    post, pre, x = rng.standard_normal((3, 40)), rng.standard_normal((3, 30)), rng.standard_normal((3, 30))
    before = w.copy()
    for bad in (dict(x=x.astype(np.float32)), dict(x=x[:, :29]), dict(x=rng.standard_normal((be.few_rows + 1, 30))),
                dict(post=rng.standard_normal((8, 40)), pre=rng.standard_normal((8, 30)))):
        kw = dict(post=post, pre=pre, x=x) | bad
        assert be.sgd_low_rank_forward(w, buf, kw["post"], kw["pre"], -1.0, 0.0, 0.9, 0.1, kw["x"]) is None
        assert np.array_equal(w, before)
    a = be.sgd_low_rank_forward(w, buf, post, pre, -1.0, 0.0, 0.9, 0.1, x)
    np.testing.assert_allclose(a, x @ w.T, rtol=1e-13, atol=1e-13)
    assert not np.array_equal(w, before)
    assert get_backend("numpy").sgd_low_rank_forward(w, buf, post, pre, -1.0, 0.0, 0.9, 0.1, x) is None


# -- the optimiser --------------------------------------------------------------------------------------
def _update(rng, R=3, n_out=20, n_in=15):
    return TwoPointUpdate(rng.standard_normal((R, n_out)), rng.standard_normal((R, n_in)))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_deferred_sgd_step_is_the_step_taken_later(backend):
    """SGD.step(defer=True) leaves W alone and keeps a PendingStep; applying it (or the next step, or
    flush, or state) gives W and the buffer the immediate step gives, bit for bit on numpy; a
    PendingStep applies once; load_state drops it."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((20, 15))
    a, b = w0.copy(), w0.copy()
    now, later = SGD([a], 0.1, weight_decay=1e-3, backend=backend), SGD([b], 0.1, weight_decay=1e-3, backend=backend)
    u1, u2 = _update(rng), _update(rng)
    now.step([u1], sign=-1.0)
    later.step([u1], sign=-1.0, defer=True)
    assert np.array_equal(b, w0) and isinstance(later.pending, PendingStep)
    now.step([u2], sign=-1.0)
    later.step([u2], sign=-1.0, defer=True)             # takes the first, defers the second
    later.lr = 123.0                                     # a deferred step keeps the rate it was given
    state = later.state()                                # takes the second
    assert later.pending is None and state["steps"] == 2
    exact = backend == "numpy"
    (np.testing.assert_array_equal if exact else
     lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-14, atol=1e-15))(b, a)
    later.step([_update(rng)], sign=-1.0, defer=True)
    pending = later.take_pending()
    assert later.pending is None
    pending.apply()
    with pytest.raises(RuntimeError, match="already applied"):
        pending.apply()
    later.step([_update(rng)], sign=-1.0, defer=True)
    kept = b.copy()
    later.load_state(now.state())
    assert later.pending is None and np.array_equal(b, kept)


def test_defer_is_ignored_for_dense_gradients_and_the_reference_path():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 4))
    opt = SGD([w], 0.1)
    before = w.copy()
    opt.step([rng.standard_normal((5, 4))], defer=True)
    assert opt.pending is None and not np.array_equal(w, before)
    ref = SGD([w], 0.1, fused=False)
    before = w.copy()
    ref.step([TwoPointUpdate(rng.standard_normal((2, 5)), rng.standard_normal((2, 4)))], defer=True)
    assert ref.pending is None and not np.array_equal(w, before)


# -- the network ------------------------------------------------------------------------------------------
def _online_net(backend, dtype=np.float64, streams=1, delays=2, refresh=True, seed=0):
    rule = Rule(kernel="gaussian", sigma=5.0, gamma=2.0, groups=4, p=0.2)
    net = MLP(30, (16, 12), 5, rule, divisive=True, backend=get_backend(backend), dtype=dtype, dropout=0.0,
              rng=np.random.default_rng(seed))
    make_online(net, streams=streams, delays=delays, refresh=refresh, shared_b3=True)
    opts = net.make_optimizers(0.2, 0.05)
    return net, opts


def _data(n=40, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, 30)), rng.integers(0, 5, n)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("streams, delays, refresh", [(1, 2, True), (1, 1, True), (1, 1, False), (2, 2, True),
                                                       (4, 1, True)])
def test_deferred_training_learns_as_immediate_steps(backend, streams, delays, refresh):
    """Training inside deferred_steps ends with the weights of the same steps taken at once (float64):
    bit for bit on numpy (the same operations in the same order), to round-off on Numba (the forward
    products fused with the steps are summed in another order); inside the block, evaluate sees the
    up-to-date weights."""
    x, y = _data()
    (n1, o1), (n2, o2) = _online_net(backend, streams=streams, delays=delays, refresh=refresh), \
        _online_net(backend, streams=streams, delays=delays, refresh=refresh)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    steps = range(0, len(y) - streams + 1, streams)
    for s in steps:
        n1.train_step(x[s:s + streams], y[s:s + streams], o1, r1)
    with n2.deferred_steps(o2):
        for i, s in enumerate(steps):
            n2.train_step(x[s:s + streams], y[s:s + streams], o2, r2)
            if i == len(steps) // 2:
                # evaluate takes what is pending; deferral goes on with the next steps
                e2 = n2.evaluate(x, y)
                assert all(opt.pending is None for opt in o2.values())
        assert any(opt.pending is not None for opt in o2.values())
    assert all(opt.pending is None for opt in o2.values())
    p1, p2 = n1.parameters(), n2.parameters()
    for k in p1:
        if backend == "numpy":
            np.testing.assert_array_equal(p2[k], p1[k], err_msg=k)
        else:
            np.testing.assert_allclose(p2[k], p1[k], rtol=1e-11, atol=1e-13, err_msg=k)
    assert isinstance(e2[0], int)


def test_bad_input_inside_the_block_loses_no_step():
    """A step that fails on its input still gives W the step it was owed: refused by the network before
    any layer (the step stays pending, taken on leaving the block), or by the layer after it was handed
    the pending step (taken there)."""
    x, y = _data()
    (n1, o1), (n2, o2) = _online_net("numba"), _online_net("numba")
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    for s in range(3):
        n1.train_step(x[s:s + 1], y[s:s + 1], o1, r1)
    with n2.deferred_steps(o2):
        for s in range(3):
            n2.train_step(x[s:s + 1], y[s:s + 1], o2, r2)
        with pytest.raises(ValueError, match="label"):
            n2.train_step(x[3:4], np.array([7]), o2, r2)
        pending = o2["hidden.0"].take_pending()
        with pytest.raises(ValueError, match="label"):
            n2.hidden[0].local_forward(x[3:4], np.array([7]), 5, n2.backend, pending=pending)
        assert pending.done
    for k, v in n1.parameters().items():
        np.testing.assert_allclose(n2.parameters()[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


def test_train_step_with_other_optimisers_takes_the_pending_steps_first():
    x, y = _data()
    net, opts = _online_net("numba")
    rng = np.random.default_rng(0)
    with net.deferred_steps(opts):
        net.train_step(x[:1], y[:1], opts, rng)
        net.train_step(x[1:2], y[1:2], opts, rng)
        assert opts["hidden.0"].pending is not None
        other = {k: SGD(list(o.params), 0.0, momentum=0.0) for k, o in opts.items()}
        net.train_step(x[2:3], y[2:3], other, rng)     # not deferred: opts' steps are taken first
        assert all(o.pending is None for o in opts.values())


@pytest.mark.gpu
def test_deferred_training_on_cupy_learns_as_numpy():
    """The CuPy backend fuses nothing (PendingStep takes its one-kernel low-rank step, then the forward
    GEMM): deferred training on it ends with the numpy run's weights to round-off (float64)."""
    pytest.importorskip("cupy")
    from conftest import backend_usable
    if not backend_usable("cupy"):
        pytest.skip("no usable cupy backend")
    x, y = _data()
    (n1, o1), (n2, o2) = _online_net("numpy"), _online_net("cupy")
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    for s in range(10):
        n1.train_step(x[s:s + 1], y[s:s + 1], o1, r1)
    with n2.deferred_steps(o2):
        for s in range(10):
            n2.train_step(x[s:s + 1], y[s:s + 1], o2, r2)
    be = n2.backend
    for k, v in n1.parameters().items():
        np.testing.assert_allclose(be.to_numpy(n2.parameters()[k]), v, rtol=1e-10, atol=1e-12, err_msg=k)
