"""Bad input gets a clear ValueError/TypeError naming the argument and what was expected."""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from threefactor import BackendUnavailable, Rule, layer_output, local_objective, local_update
from threefactor import third_factor

# most cases here omit n_classes for brevity (labels 0..2 of a 3-class problem)
pytestmark = pytest.mark.filterwarnings("ignore:n_classes not given:UserWarning")



@pytest.fixture
def xwy(make_problem):
    return make_problem()


def _replace(a, idx, value):
    a = np.array(a, dtype=np.float64)
    a[idx] = value
    return a


SHAPE_CASES = [
    ("x columns vs w", lambda x, w, y: (x, w[:, :4], y), ValueError, r"x has n_in=5 .* w"),
    ("y rows vs m", lambda x, w, y: (x, w, y[:5]), ValueError, r"y has 5 rows .* m=6"),
    ("one-hot y rows vs m", lambda x, w, y: (x, w, np.eye(3)[y][:4]), ValueError, r"y has 4 rows"),
    ("x 1-D", lambda x, w, y: (x[0], w, y), ValueError, r"x must be 2-D"),
    ("x 3-D", lambda x, w, y: (x[None], w, y), ValueError, r"x must be 2-D"),
    ("w 1-D", lambda x, w, y: (x, w[0], y), ValueError, r"w must be 2-D"),
    ("y 3-D", lambda x, w, y: (x, w, np.eye(3)[y][None]), ValueError, r"y must be"),
    ("m = 1", lambda x, w, y: (x[:1], w, y[:1]), ValueError, r"m=2"),
    ("NaN in x", lambda x, w, y: (_replace(x, (0, 0), np.nan), w, y), ValueError, r"x contains NaN"),
    ("Inf in x", lambda x, w, y: (_replace(x, (2, 1), -np.inf), w, y), ValueError, r"x contains NaN or Inf"),
    ("NaN in w", lambda x, w, y: (x, _replace(w, (1, 1), np.nan), y), ValueError, r"w contains NaN"),
    ("Inf in w", lambda x, w, y: (x, _replace(w, (0, 0), np.inf), y), ValueError, r"w contains NaN or Inf"),
    ("NaN in y", lambda x, w, y: (x, w, _replace(np.eye(3)[y], (0, 0), np.nan)), ValueError, r"y contains NaN"),
    ("NaN in integer-label y", lambda x, w, y: (x, w, _replace(y, 0, np.nan)), ValueError, r"y contains NaN"),
    ("y row not one-hot", lambda x, w, y: (x, w, _replace(np.eye(3)[y], 0, [0.5, 0.5, 0])), ValueError, r"one-hot"),
    ("y row with two ones", lambda x, w, y: (x, w, _replace(np.eye(3)[y], 0, [1, 1, 0])), ValueError, r"one-hot"),
    ("y row all zero", lambda x, w, y: (x, w, _replace(np.eye(3)[y], 0, [0, 0, 0])), ValueError, r"one-hot"),
    ("negative label", lambda x, w, y: (x, w, y - 1), ValueError, r"labels y must be >= 0"),
    ("fractional label", lambda x, w, y: (x, w, y + 0.5), ValueError, r"y must be whole numbers"),
    ("one class only", lambda x, w, y: (x, w, np.zeros(6, int)), ValueError, r"n_classes must be >= 2"),
    ("complex x", lambda x, w, y: (x + 0j, w, y), TypeError, r"x must hold real numbers"),
    ("string w", lambda x, w, y: (x, w.astype(str), y), TypeError, r"w must hold real numbers"),
    pytest.param("y is None", lambda x, w, y: (x, w, None), (TypeError, ValueError), r"\by\b"),
    pytest.param("no output neurons", lambda x, w, y: (x, w[:0], y), ValueError, r"\bw\b|n_out"),
    pytest.param("no input features", lambda x, w, y: (x[:, :0], w[:, :0], y), ValueError,
                 r"\bx\b|n_in"),
]


@pytest.mark.parametrize("func", [local_update, local_objective])
@pytest.mark.parametrize("case, make, exc, match", SHAPE_CASES,
                         ids=[getattr(c, "values", c)[0] for c in SHAPE_CASES])
def test_bad_arrays(func, case, make, exc, match, xwy):
    x, w, y = make(*xwy)
    with pytest.raises(exc, match=match):
        func(x, w, y)


RULE_CASES = [
    (dict(groups=3), ValueError, r"groups=3 does not divide .* n_out=8"),
    (dict(groups=8), ValueError, r"groups=8 leaves groups of 1 neuron"),
    (dict(groups=0), ValueError, r"groups must be >= 1"),
    (dict(groups=2.0), TypeError, r"groups must be an int"),
    (dict(sigma=0), ValueError, r"sigma must be > 0"),
    (dict(sigma=-1.5), ValueError, r"sigma must be > 0"),
    (dict(sigma=float("nan")), ValueError, r"sigma must be finite"),
    (dict(sigma="5"), TypeError, r"sigma must be a real number"),
    (dict(groups=4, p=1.0), ValueError, r"p must be in \[0, 1\)"),
    (dict(groups=4, p=-0.1), ValueError, r"p must be in \[0, 1\)"),
    (dict(gamma=-0.5), ValueError, r"gamma must be >= 0"),
    (dict(gamma=float("inf")), ValueError, r"gamma must be finite"),
    (dict(groups=4, delta=0), ValueError, r"delta must be > 0"),
    (dict(groups=4, delta=-1), ValueError, r"delta must be > 0"),
    (dict(kernel="sigmoid"), ValueError, r"kernel='sigmoid' is not one of: gaussian, cosine, linear"),
    (dict(kernel="gausian"), ValueError, r"kernel='gausian' is not known; did you mean 'gaussian'\?"),
    (dict(kernel=object()), TypeError, r"kernel must be one of .* matrix\(v, xp\)"),
    (dict(activation="tanh"), ValueError, r"activation='tanh' is not one of: linear, relu, lrelu, selu"),
    (dict(label_kernel="rbf"), ValueError, r"label_kernel='rbf' is not one of: cosine, linear"),
    (dict(backend="jax"), ValueError, r"backend='jax' is not one of: numpy, numba, cupy"),
    (dict(backend=3), TypeError, r"backend must be a name"),
    (dict(n_classes=1), ValueError, r"n_classes=1"),
    (dict(n_classes=2), ValueError, r"label 2 is out of range for n_classes=2"),
    (dict(n_classes=4, onehot=True), ValueError, r"n_classes=4 disagrees with one-hot y of 3 columns"),
    pytest.param(dict(n_classes=3.5), (TypeError, ValueError), r"n_classes"),
    pytest.param(dict(n_classes="3"), TypeError, r"n_classes"),
]


@pytest.mark.parametrize("func", [local_update, local_objective])
@pytest.mark.parametrize("kwargs, exc, match", RULE_CASES, ids=lambda v: str(v) if isinstance(v, dict) else None)
def test_bad_rule(func, kwargs, exc, match, xwy):
    x, w, y = xwy
    kwargs = dict(kwargs)
    if kwargs.pop("onehot", False):
        y = np.eye(3)[y]
    with pytest.raises(exc, match=match):
        func(x, w, y, **kwargs)


def test_rule_object_validates_itself():
    with pytest.raises(ValueError, match=r"sigma must be > 0"):
        Rule(sigma=0)
    with pytest.raises(ValueError, match=r"groups=3 does not divide"):
        Rule(groups=3).check_width(8)


def test_third_factor_and_layer_output_validate(xwy):
    x, w, y = xwy
    with pytest.raises(ValueError, match=r"kernel='gaussian' only"):
        third_factor(x, w, y, kernel="cosine")
    with pytest.raises(ValueError, match=r"groups=3 does not divide"):
        third_factor(x, w, y, groups=3)
    with pytest.raises(ValueError, match=r"divisive=True needs groups"):
        layer_output(x, w, divisive=True)
    with pytest.raises(ValueError, match=r"groups=8 leaves groups of 1"):
        layer_output(x, w, groups=8, divisive=True)
    with pytest.raises(ValueError, match=r"x has n_in=5 .* w"):
        layer_output(x, w[:, :3])
    with pytest.raises(ValueError, match=r"x contains NaN"):
        layer_output(_replace(x, (0, 0), np.nan), w)
    with pytest.raises(ValueError, match=r"activation='tanh'"):
        layer_output(x, w, activation="tanh")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed here")
def test_cupy_unavailable_is_explained(xwy):
    x, w, y = xwy
    with pytest.raises(BackendUnavailable, match=r"cupy is not installed"):
        local_update(x, w, y, backend="cupy")


def _fake_cupy(device_count):
    """A stand-in ``cupy`` module whose runtime reports ``device_count`` GPUs, or raises it."""
    class CUDARuntimeError(RuntimeError):
        pass

    def get_device_count():
        if isinstance(device_count, str):
            raise CUDARuntimeError(device_count)
        return device_count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count, CUDARuntimeError=CUDARuntimeError)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("cupy_module,message", [
    (None, r"cupy is not installed: pip install (-e \"\.\[gpu\]\" \(in .*\)|\"threefactor\[gpu\]\")$"),
    (_fake_cupy("cudaErrorNoDevice: no CUDA-capable device is detected"),
     r"cupy is installed but no GPU is usable: cudaErrorNoDevice"),
    (_fake_cupy(0), r"cupy is installed but no GPU is visible"),
], ids=["not-installed", "no-driver-or-device", "zero-devices"])
def test_get_backend_cupy_without_a_gpu_is_explained(monkeypatch, cupy_module, message):
    """Whether or not cupy is installed here, a machine without a usable GPU gets BackendUnavailable."""
    from threefactor.backends import _load, available_backends, get_backend

    monkeypatch.setitem(sys.modules, "cupy", cupy_module)   # None: `import cupy` raises ImportError
    _load.cache_clear()
    try:
        with pytest.raises(BackendUnavailable, match=message):
            get_backend("cupy")
        assert "cupy" not in available_backends()
    finally:
        _load.cache_clear()


@pytest.mark.parametrize("groups", [None, 4])
@pytest.mark.parametrize("activation", ["linear", "relu", "selu"])
def test_cosine_kernel_on_zero_rows_is_finite(groups, activation, backend, xwy):
    """A zero input row gives v = 0 (plain: z = 0; grouped: all u equal): similarity 0, no NaN."""
    x, w, y = xwy
    x = x.copy()
    x[0] = 0.0
    kw = dict(kernel="cosine", groups=groups, activation=activation, backend=backend)
    assert np.isfinite(local_objective(x, w, y, **kw))
    assert np.all(np.isfinite(local_update(x, w, y, **kw)))
    zeros = np.zeros_like(w)                       # every row of v is zero
    assert np.isfinite(local_objective(x, zeros, y, **kw))
    dw = local_update(x, zeros, y, **kw)
    assert np.all(np.isfinite(dw))


def test_an_unknown_kernel_or_dataset_says_a_path_is_accepted_too():
    """A short list given in full also says what else is accepted (a user's kernel, a dataset path)."""
    from threefactor.data.registry import canonical_dataset
    from threefactor.rule.kernels import KERNEL_NAMES
    with pytest.raises(ValueError, match=r"dataset='bogus' is not one of: mnist, fmnist, kmnist, cifar10; or a "
                                         r"path to a folder of IDX files"):
        canonical_dataset("bogus")
    with pytest.raises(ValueError, match=r"kernel='sigmoid' is not one of: gaussian, cosine, linear; or your own "
                                         r"kernel as path/to/file.py:Class"):
        KERNEL_NAMES.resolve("sigmoid")
