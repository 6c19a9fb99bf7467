"""Inputs a user can get wrong, found by an audit of the public API: each gets an error naming what
is wrong (user kernels that return the wrong thing, out-of-range σ, unusable arrays, labels)."""
import warnings

import numpy as np
import pytest

import threefactor as tf
from threefactor import Rule
from threefactor.verify.gradcheck import check_rule

BACKENDS = ["numpy", "numba"]


class _Kernel:
    """A linear kernel (Eq. 24) whose outputs a test can spoil."""

    def __init__(self, matrix=lambda K: K, pullback=lambda g: g):
        self.spoil_matrix, self.spoil_pullback = matrix, pullback

    def matrix(self, v, xp):
        return self.spoil_matrix(v @ v.T)

    def pullback(self, v, K, C, xp):
        return self.spoil_pullback(2.0 * (C @ v))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 5)), rng.normal(size=(4, 5)), np.arange(16) % 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("groups", [None, 2])
def test_a_user_kernel_of_the_wrong_shape_is_named(problem, backend, groups):
    """A pullback returning C (m, m) instead of dL/dv (m, d) was read past its end by the Numba kernels."""
    x, w, y = problem
    d = groups or w.shape[0]
    bad = _Kernel(pullback=lambda g: g @ g.T)
    with pytest.raises(ValueError, match=rf"_Kernel.pullback returned shape \(16, 16\); expected \(16, {d}\)"):
        tf.local_update(x, w, y, n_classes=3, kernel=bad, groups=groups, backend=backend)
    with pytest.raises(ValueError, match=r"_Kernel.matrix returned shape \(2, 16\)"):
        tf.local_objective(x, w, y, n_classes=3, kernel=_Kernel(matrix=lambda K: K[:2]), backend=backend)
    with pytest.raises(TypeError, match=r"_Kernel.matrix must return an array .* got list"):
        tf.local_objective(x, w, y, n_classes=3, kernel=_Kernel(matrix=lambda K: K.tolist()), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("groups", [None, 2])
def test_a_user_kernel_keeps_the_inputs_dtype(problem, backend, groups):
    x, w, y = (a.astype(np.float32) if a.dtype.kind == "f" else a for a in problem)
    wide = _Kernel(matrix=lambda K: K.astype(np.float64), pullback=lambda g: g.astype(np.float64))
    dw = tf.local_update(x, w, y, n_classes=3, kernel=wide, groups=groups, backend=backend)
    ref = tf.local_update(x, w, y, n_classes=3, kernel="linear", groups=groups, backend=backend)
    assert dw.dtype == np.float32
    np.testing.assert_allclose(dw, ref, rtol=1e-5, atol=1e-6)


def test_a_user_kernel_returning_nan_is_an_error_unless_the_input_is_to_blame(problem):
    x, w, y = problem
    with pytest.raises(ValueError, match=r"_Kernel.matrix returned NaN or Inf \(v is finite\)"):
        tf.local_objective(x, w, y, n_classes=3, kernel=_Kernel(matrix=lambda K: K * np.nan))
    with pytest.raises(ValueError, match=r"_Kernel.pullback returned NaN"):
        tf.local_update(x, w, y, n_classes=3, kernel=_Kernel(pullback=lambda g: g / 0.0))
    x = x.copy()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf"):
        tf.local_update(x, w, y, n_classes=3, kernel=_Kernel())


def test_check_rule_names_a_bad_user_kernel_before_its_references_fail():
    with pytest.raises(ValueError, match=r"_Kernel.matrix returned shape \(2, 6\); expected \(6, 6\)"):
        check_rule(kernel=_Kernel(matrix=lambda K: K[:2]), backends=["numpy"])
    with pytest.raises(TypeError, match=r"rule must be a threefactor.Rule .* check_rule\(kernel=...\)"):
        check_rule("gaussian")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the clear error comes before any numpy warning
        with pytest.raises(ValueError, match=r"n_classes must be an integer >= 2, got 1"):
            check_rule(n_classes=1)
        with pytest.raises(ValueError, match=r"m must be an integer >= 2, got 1"):
            check_rule(m=1)


def test_integer_labels_without_n_classes_warn(problem):
    x, w, y = problem
    with pytest.warns(UserWarning, match=r"n_classes not given: taken as the largest label \+ 1 = 3"):
        tf.local_objective(x, w, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf.local_objective(x, w, y, n_classes=3)
        tf.local_objective(x, w, np.eye(3)[y])


def test_one_group_is_refused_and_two_cosine_groups_warn():
    with pytest.raises(ValueError, match=r"groups=1 makes the representation identically zero"):
        Rule(groups=1)
    with pytest.warns(UserWarning, match=r"groups=2 with the cosine kernel is degenerate"):
        Rule(kernel="cosine", groups=2)


@pytest.mark.parametrize("sigma, exc, match", [
    (1e-200, ValueError, r"sigma=1e-200 is out of range"),
    (1e200, ValueError, r"sigma=1e\+200 is out of range"),
    (np.array([5.0]), TypeError, r"sigma must be a real number \(a scalar\), got ndarray of shape \(1,\)"),
])
def test_sigma_out_of_range_is_named(problem, sigma, exc, match):
    x, w, y = problem
    with pytest.raises(exc, match=match):
        tf.local_update(x, w, y, n_classes=3, sigma=sigma)


def test_unusable_arrays_and_labels_are_named(problem):
    x, w, y = problem

    class DeviceArray:
        __cuda_array_interface__ = {}

    for bad, match in ((None, r"x must be an array of numbers, got builtins.NoneType"),
                       ("abc", r"x must be an array of numbers, got builtins.str of dtype <U3"),
                       (DeviceArray(), r"x is a GPU array .* backend='numpy' works on host arrays")):
        with pytest.raises(TypeError, match=match):
            tf.local_update(bad, w, y, n_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "invalid value in cast" before the error
        with pytest.raises(ValueError, match=r"labels y must be class indices .* 2\*\*53"):
            tf.local_update(x, w, np.where(y == 2, 1e30, y).astype(np.float64), n_classes=3)
    with pytest.raises(TypeError, match=r"divisive must be True or False, got str 'no'"):
        tf.layer_output(x, w, groups=2, divisive="no")


@pytest.mark.gpu
def test_a_user_kernel_on_the_cupy_backend_is_checked_too(problem):
    """(a GPU, or the CPU emulator: THREEFACTOR_EMULATE_CUPY=1 ... -m gpu)"""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install threefactor[gpu])")
    try:
        usable = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver / no device
        usable = False
    if not usable:
        pytest.skip("CuPy is installed but no GPU is usable")
    x, w, y = problem
    x, w = cupy.asarray(x.astype(np.float32)), cupy.asarray(w.astype(np.float32))
    with pytest.raises(ValueError, match=r"_Kernel.pullback returned shape \(16, 16\); expected \(16, 2\)"):
        tf.local_update(x, w, y, n_classes=3, kernel=_Kernel(pullback=lambda g: g @ g.T), groups=2, backend="cupy")
    wide = _Kernel(matrix=lambda K: K.astype(cupy.float64), pullback=lambda g: g.astype(cupy.float64))
    dw = tf.local_update(x, w, y, n_classes=3, kernel=wide, groups=2, backend="cupy")
    assert isinstance(dw, cupy.ndarray) and dw.dtype == np.float32
    ref = tf.local_update(x, w, y, n_classes=3, kernel="linear", groups=2, backend="cupy")
    np.testing.assert_allclose(cupy.asnumpy(dw), cupy.asnumpy(ref), rtol=1e-5, atol=1e-6)


def test_a_conv_layer_that_overflows_is_an_error_not_nan():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 2, 6, 6)) * 1e20).astype(np.float32)
    w = (rng.normal(size=(4, 2, 3, 3)) * 1e20).astype(np.float32)
    for f in (tf.local_update, tf.local_objective):
        with pytest.raises(ValueError, match=r"conv\(x, w\) overflows .* too large for float32"):
            f(x, w, [0, 1, 2, 0], n_classes=3)


def test_padding_is_checked_on_a_dense_layer_too(problem):
    x, w, y = problem
    with pytest.raises(ValueError, match=r"padding must be >= 0, got -5"):
        tf.local_update(x, w, y, n_classes=3, padding=-5)
    with pytest.raises(TypeError, match=r"padding must be an int, got str"):
        tf.local_objective(x, w, y, n_classes=3, padding="x")
