"""Bad input to the online rule: a clear error naming the argument, never a silent NaN in the weights
(OnlineLayer, two_point_update, apply_update, TwoPointRule, OnlineLayer.load_state)."""
from __future__ import annotations

import numpy as np
import pytest

import threefactor as tf
from threefactor.rule.online import TwoPointRule, TwoPointUpdate, apply_update, two_point_update
from threefactor.nn.online_layer import OnlineLayer

RULE = dict(sigma=1.3, gamma=1.7)


def _layer(streams=2, **kw):
    rng = np.random.default_rng(0)
    return OnlineLayer(rng.standard_normal((8, 5)), tf.Rule(**RULE), streams=streams, n_classes=3, **kw)


def _bad(value, where):
    a = np.ones((2, 5))
    a[where] = value
    return a


# -- OnlineLayer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("first", [True, False])
def test_non_finite_x_is_refused_and_w_untouched(value, first):
    layer = _layer()
    if not first:
        layer.learn(np.ones((2, 5)), np.array([0, 1]), 0.1)
    w, t = layer.w.copy(), layer.t
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        layer.learn(_bad(value, (1, 3)), np.array([0, 1]), 0.1)
    assert np.array_equal(layer.w, w) and layer.t == t
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        layer.forward(_bad(value, (0, 0)))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_w_is_refused(value):
    w = np.ones((8, 5))
    w[2, 1] = value
    with pytest.raises(ValueError, match="w contains NaN or Inf"):
        OnlineLayer(w, tf.Rule(**RULE), streams=2, n_classes=3)
    layer = _layer()                                    # w corrupted from outside after construction
    layer.w[4, 0] = value
    with pytest.raises(ValueError, match="w contains NaN or Inf"):
        layer.step(np.ones((2, 5)), np.array([0, 1]))


@pytest.mark.parametrize("lr,err", [(float("nan"), ValueError), (float("inf"), ValueError), (-0.1, ValueError),
                                    ("0.1", TypeError), (None, TypeError)])
def test_bad_lr_is_refused_and_w_untouched(lr, err):
    layer = _layer()
    layer.learn(np.ones((2, 5)), np.array([0, 1]), 0.1)
    w = layer.w.copy()
    with pytest.raises(err, match="lr must be"):
        layer.learn(np.zeros((2, 5)), np.array([1, 1]), lr)
    assert np.array_equal(layer.w, w) and np.isfinite(layer.w).all()


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_forward_names_the_overflow():
    layer = OnlineLayer(np.full((4, 3), 1e30, np.float32), tf.Rule(**RULE), streams=1, n_classes=3)
    with pytest.raises(ValueError, match="overflowed float32"):
        layer.step(np.full((1, 3), 1e30, np.float32), np.array([0]))


def test_lists_and_bad_shapes_and_dtypes():
    layer = _layer()
    out = layer.forward([[0.0] * 5] * 3)                              # lists are arrays
    assert out.shape == (3, 8)
    layer.learn([[1.0] * 5] * 2, [0, 2], 0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(m, n_in\) = \(m, 5\), got shape \(3, 4\)"):
        layer.forward(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"x must have shape \(m, n_in\)"):
        layer.forward(np.zeros(5))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        layer.step(np.zeros((2, 5)) + 1j, np.array([0, 1]))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        layer.forward([["a"] * 5])
    with pytest.raises(TypeError, match="labels must be integers"):
        layer.step(np.zeros((2, 5)), [0.5, 1.0])
    with pytest.raises(ValueError, match=r"labels must be in \[0, n_classes\) = \[0, 3\)"):
        layer.step(np.zeros((2, 5)), [-1, 0])


def test_w_must_be_c_contiguous_and_2d():
    w = np.random.default_rng(0).standard_normal((5, 8))
    with pytest.raises(ValueError, match="w must be C-contiguous .*np.ascontiguousarray"):
        OnlineLayer(w.T, tf.Rule(**RULE), streams=2, n_classes=3)
    layer = OnlineLayer(np.ascontiguousarray(w.T), tf.Rule(**RULE), streams=2, n_classes=3)
    layer.learn(np.ones((2, 5)), [0, 1], 0.1)
    layer.learn(np.zeros((2, 5)), [1, 1], 0.1)                    # the fused in-place update works
    with pytest.raises(ValueError, match="w must be 2-D"):
        OnlineLayer(np.zeros(5), tf.Rule(**RULE))
    with pytest.raises(TypeError, match="w must hold real numbers"):
        OnlineLayer(np.array([["a"]]), tf.Rule(**RULE))
    layer = OnlineLayer(np.ones((8, 5), dtype=np.int64), tf.Rule(**RULE), n_classes=3)   # ints: a float copy
    assert layer.w.dtype == np.float64 and layer.w.flags.c_contiguous


@pytest.mark.parametrize("value", ["x", [1.0], object()])
def test_b3_init_must_be_a_number(value):
    with pytest.raises(TypeError, match="b3_init must be a finite number or None"):
        TwoPointRule(tf.Rule(**RULE), b3_init=value)
    with pytest.raises(TypeError, match="b3_init"):
        OnlineLayer(np.ones((4, 3)), tf.Rule(**RULE), b3_init=value)


# -- two_point_update and apply_update ------------------------------------------------------------
def _pair(dtype=np.float64):
    rng = np.random.default_rng(1)
    return (rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype),
            rng.standard_normal((8, 5)).astype(dtype), np.array([0, 1, 2]), np.array([0, 2, 2]))


def test_two_point_update_accepts_lists_and_keeps_float32():
    x1, x0, w, y1, y0 = _pair()
    trule = TwoPointRule(tf.Rule(**RULE), n_classes=3)
    ref = two_point_update(x1, x0, w, y1, y0, trule)
    got = two_point_update(x1.tolist(), x0.tolist(), w.tolist(), y1.tolist(), y0.tolist(), trule)
    np.testing.assert_array_equal(got, ref)
    x1, x0, w, y1, y0 = _pair(np.float32)
    assert two_point_update(x1, x0, w, y1, y0, trule).dtype == np.float32


@pytest.mark.parametrize("change,err,match", [
    (dict(labels_now=np.array([0.5, 1.0, 2.0])), TypeError, "labels_now must be integers"),
    (dict(labels_now=np.array([0.0, 1.0, 2.0])), TypeError, "labels_now must be integers"),
    (dict(labels_prev=np.array([0, 3, 1])), ValueError, r"labels_prev must be in \[0, n_classes\) = \[0, 3\)"),
    (dict(labels_now=np.array([0, -1, 1])), ValueError, r"labels_now must be in \[0, n_classes\)"),
    (dict(labels_now=np.array([0, 1])), ValueError, r"labels_now must have shape \(3,\)"),
    (dict(x_prev=np.zeros((2, 5))), ValueError, r"x_prev must have the shape of x_now \(3, 5\)"),
    (dict(x_now=np.zeros((3, 4))), ValueError, r"x_now must have shape \(B, n_in\) = \(B, 5\)"),
    (dict(x_now=np.zeros((0, 5)), x_prev=np.zeros((0, 5)), labels_now=np.zeros(0, int),
          labels_prev=np.zeros(0, int)), ValueError, "B >= 1 pairs"),
    (dict(w=np.zeros(5)), ValueError, "w must be 2-D"),
    (dict(x_now=_bad(np.nan, (0, 0))[[0, 1, 1]]), ValueError, "x_now contains NaN or Inf"),
    (dict(x_prev=np.full((3, 5), np.inf)), ValueError, "x_prev contains NaN or Inf"),
    (dict(w=np.full((8, 5), np.nan)), ValueError, "w contains NaN or Inf"),
    (dict(x_now=np.full((3, 5), "a")), TypeError, "x_now must hold real numbers"),
    (dict(b3=np.zeros(2)), ValueError, r"b3 must be a number or an array of shape \(B,\) = \(3,\)"),
    (dict(b3=float("nan")), ValueError, "b3 contains NaN or Inf"),
    (dict(trule=tf.Rule()), TypeError, "trule must be a threefactor.rule.online.TwoPointRule"),
])
def test_two_point_update_bad_input(change, err, match):
    x1, x0, w, y1, y0 = _pair()
    args = dict(x_now=x1, x_prev=x0, w=w, labels_now=y1, labels_prev=y0,
                trule=TwoPointRule(tf.Rule(**RULE), n_classes=3))
    args.update(change)
    with pytest.raises(err, match=match):
        two_point_update(**args)


def test_apply_update_refuses_bad_lr_shapes_and_non_finite_terms():
    w = np.ones((6, 4))
    good = TwoPointUpdate(np.ones((2, 6)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        apply_update(w, good, float("nan"))
    with pytest.raises(ValueError, match=r"update has post \(2, 5\)"):
        apply_update(w, TwoPointUpdate(np.ones((2, 5)), np.ones((2, 4))), 0.1)
    with pytest.raises(ValueError, match="update.post contains NaN or Inf"):
        apply_update(w, TwoPointUpdate(np.full((2, 6), np.nan), np.ones((2, 4))), 0.1)
    assert (w == 1).all()


# -- load_state -----------------------------------------------------------------------------------
def _state(**kw):
    layer = _layer(**kw)
    layer.learn(np.ones((2, 5)), [0, 1], 0.1)
    layer.learn(np.zeros((2, 5)), [1, 1], 0.1)
    return {k: np.array(v) for k, v in layer.state().items()}


def test_load_state_refuses_per_stream_b3_in_a_shared_layer_and_back():
    per_stream, shared = _state(), _state(shared_b3=True)
    with pytest.raises(ValueError, match=r"shared_b3=True.*per-stream layer"):
        _layer(shared_b3=True).load_state(per_stream)
    with pytest.raises(ValueError, match=r"one b3 per stream, shape \(2,\).*shared-b3 layer"):
        _layer().load_state(shared)
    for kw, state in ((dict(), per_stream), (dict(shared_b3=True), shared)):     # the right ones load
        layer = _layer(**kw)
        layer.load_state(state)
        assert np.ndim(layer.b3) == np.ndim(state["b3"])


def test_load_state_refuses_another_group_count_and_bad_arrays():
    def grouped(groups):
        layer = OnlineLayer(np.ones((8, 5)), tf.Rule(groups=groups, **RULE), streams=2, n_classes=3)
        return layer
    a = grouped(4)
    a.learn(np.ones((2, 5)), [0, 1], 0.1)
    state = a.state()
    with pytest.raises(ValueError, match=r"state\['prev.v'\] has shape \(2, 4\), this layer needs \(2, 2\) "
                                         r"\(2 streams, 2 groups\)"):
        grouped(2).load_state(state)
    bad = dict(state, labels=np.array([0, 7]))
    with pytest.raises(ValueError, match=r"state\['labels'\] must be in \[0, n_classes\)"):
        grouped(4).load_state(bad)
    bad = dict(state, **{"prev.z": np.full((2, 8), np.nan)})
    with pytest.raises(ValueError, match=r"state\['prev.z'\] contains NaN or Inf"):
        grouped(4).load_state(bad)
    bad = {k: v for k, v in state.items() if k != "b3"}
    with pytest.raises(ValueError, match="state lacks b3"):
        grouped(4).load_state(bad)
    layer = grouped(4)
    with pytest.raises(ValueError):
        layer.load_state(dict(state, b3=np.zeros(3)))
    assert layer.state() == {}                          # a refused state leaves the streams reset


@pytest.mark.parametrize("shared", [False, True])
def test_state_after_one_step_has_no_b3_yet_and_round_trips(shared, tmp_path):
    """After a single step there is no pair, so no b3: saved as an empty array (it was an object
    array holding None, which np.load refuses and isfinite cannot check), restored as not started."""
    a = _layer(shared_b3=shared)
    a.learn(np.ones((2, 5)), [0, 1], 0.1)
    st = a.state()
    assert st["b3"].shape == (0,) and st["b3"].dtype.kind == "f"
    np.savez(tmp_path / "s.npz", **st)
    with np.load(tmp_path / "s.npz") as z:
        b = _layer(shared_b3=shared)
        b.load_state(dict(z))
    assert b.b3 is None and b.t == 1
    for layer in (a, b):
        layer.learn(np.zeros((2, 5)), [1, 1], 0.1)
    np.testing.assert_array_equal(a.w, b.w)
    np.testing.assert_array_equal(a.b3, b.b3)


@pytest.mark.gpu
def test_cupy_layer_checks_host_input_lr_w_and_state():
    """On the device path: host inputs are checked on the host before upload, lr and shapes on the
    host, w once at construction; device arrays are never read back per step."""
    from threefactor.backends import BackendUnavailable, get_backend
    try:
        be = get_backend("cupy")
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    layer = _layer(backend="cupy")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        layer.step(_bad(np.nan, (0, 0)), np.array([0, 1]))
    layer.learn(np.ones((2, 5)), [0, 1], 0.1)
    layer.learn(be.asarray(np.zeros((2, 5))), be.asarray(np.array([1, 1])), 0.1)
    w = be.to_numpy(layer.w)
    with pytest.raises(ValueError, match="lr must be"):
        layer.learn(np.ones((2, 5)), [0, 1], float("nan"))
    assert np.array_equal(be.to_numpy(layer.w), w)
    with pytest.raises(ValueError, match="shared_b3=True"):
        _layer(backend="cupy", shared_b3=True).load_state(layer.state())
    with pytest.raises(ValueError, match="w must be C-contiguous"):
        OnlineLayer(be.asarray(np.ones((5, 8))).T, tf.Rule(**RULE), backend="cupy")
    bad = np.ones((8, 5))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="w contains NaN or Inf"):
        OnlineLayer(be.asarray(bad), tf.Rule(**RULE), backend="cupy")
