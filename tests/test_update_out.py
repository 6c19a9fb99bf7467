"""local_update(out=): the same numbers written into the caller's buffer; clear errors for a bad one."""
import numpy as np
import pytest

import threefactor as tf
from threefactor import heap

RULES = [dict(kernel="gaussian"), dict(kernel="gaussian", groups=4, p=0.2), dict(kernel="cosine")]


@pytest.mark.parametrize("backend", [b for b in ("numpy", "numba") if b in tf.available_backends()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", RULES)
def test_out_is_bit_identical_and_returned(backend, dtype, rule):
    rng = np.random.default_rng(3)
    for m, n_in, n_out in ((16, 12, 8), (64, 300, 200)):
        x = rng.normal(size=(m, n_in)).astype(dtype)
        w = (rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
        y = rng.integers(0, 5, m)
        kw = dict(rule, backend=backend, n_classes=5)
        ref = tf.local_update(x, w, y, **kw)
        out = np.full_like(ref, np.nan)
        for _ in range(2):                     # reused buffer: same numbers again
            got = tf.local_update(x, w, y, out=out, **kw)
            assert got is out and np.array_equal(got, ref)


def test_out_on_a_conv_layer_is_filled():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 6, 6)).astype(np.float32)
    w = (rng.normal(size=(4, 2, 3, 3)) / 4).astype(np.float32)
    y = rng.integers(0, 3, 6)
    ref = tf.local_update(x, w, y, n_classes=3, pool="max")
    out = np.zeros_like(ref)
    assert tf.local_update(x, w, y, n_classes=3, pool="max", out=out) is out
    assert np.array_equal(out, ref)


def test_bad_out_is_named():
    rng = np.random.default_rng(0)
    x, w, y = rng.normal(size=(8, 6)), rng.normal(size=(4, 6)), rng.integers(0, 2, 8)
    cases = [(np.zeros((6, 4)), ValueError, r"out must have shape \(4, 6\) and dtype float64"),
             (np.zeros((4, 6), np.float32), ValueError, "dtype float64"),
             (np.zeros((6, 4)).T, ValueError, "C-contiguous"),
             ([[0.0] * 6] * 4, TypeError, "out must be a numpy array")]
    ro = np.zeros((4, 6))
    ro.flags.writeable = False
    cases.append((ro, ValueError, "writeable"))
    for out, error, match in cases:
        with pytest.raises(error, match=match):
            tf.local_update(x, w, y, n_classes=2, out=out)
    xs = rng.normal(size=(8, 6))               # out the last rows of x itself
    with pytest.raises(ValueError, match="share memory with x"):
        tf.local_update(xs, w, y, n_classes=2, out=xs[4:])


def test_keep_for_loops_runs_once_and_honours_the_opt_out(monkeypatch):
    monkeypatch.setattr(heap, "_DONE", [])
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    assert heap.keep_for_loops() is True and heap.keep_for_loops() is True and calls == [1]
    monkeypatch.setattr(heap, "_DONE", [])
    monkeypatch.setenv(heap.OPT_OUT, "default")
    assert heap.keep_for_loops() is False and calls == [1]


def test_an_mlp_on_the_cpu_keeps_freed_memory(monkeypatch):
    from threefactor.backends import get_backend
    from threefactor.nn.mlp import MLP

    monkeypatch.setattr(heap, "_DONE", [])
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    MLP(4, [4], 2, tf.Rule(), backend=get_backend("numpy"), rng=np.random.default_rng(0))
    assert calls == [1]


@pytest.mark.gpu
def test_out_on_cupy_is_bit_identical():
    from conftest import backend_usable

    if not backend_usable("cupy"):
        pytest.skip("backend cupy is unavailable here")
    import cupy

    rng = np.random.default_rng(1)
    x = cupy.asarray(rng.normal(size=(32, 20)).astype(np.float32))
    w = cupy.asarray((rng.normal(size=(16, 20)) / 5).astype(np.float32))
    y = cupy.asarray(rng.integers(0, 3, 32))
    kw = dict(n_classes=3, backend="cupy", groups=4)
    ref = tf.local_update(x, w, y, **kw)
    out = cupy.empty_like(ref)
    assert tf.local_update(x, w, y, out=out, **kw) is out
    assert bool((out == ref).all())
    with pytest.raises(TypeError, match="out must be a cupy array"):
        tf.local_update(x, w, y, out=np.empty((16, 20), np.float32), **kw)
