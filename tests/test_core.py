"""The core engine against its definitions: every variant × backend × dtype.

References, all float64: the numpy GEMM path, complex-step and finite-difference
derivatives of the literal objective (pairwise.objective), and the literal
pair sums of Eq. 12 / 22 (pairwise.pairwise_update, pairwise.third_factor).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from threefactor import layer_output, local_objective, local_update
from threefactor.verify import naive as pairwise
from threefactor import third_factor
from threefactor.rule.activations import activate
from threefactor.verify.gradcheck import complex_step_gradient, make_problem, reference_updates, relative_error
from threefactor.verify.variants import variants
from threefactor.rule.rules import ACTIVATIONS, KERNELS, LABEL_KERNELS, Rule

VARIANTS = dict(variants(label_kernels=LABEL_KERNELS))
N_CLASSES = 3
#: max|ΔW - ref| / max|ref| allowed, per dtype of the explicit update.
TOL = {np.float64: {"numpy64": 1e-12, "complex": 1e-10, "fd": 1e-6},
       np.float32: {"numpy64": 1e-4, "complex": 1e-4}}


def kwargs_of(rule):
    return dict(kernel=rule.kernel, sigma=rule.sigma, gamma=rule.gamma, activation=rule.activation,
                slope=rule.slope, groups=rule.groups, p=rule.p, delta=rule.delta,
                label_kernel=rule.label_kernel)


@functools.lru_cache(maxsize=None)
def references(name, dtype):
    """(x, w, labels, {numpy64, complex[, fd]}) at the point rounded to ``dtype``."""
    rule = VARIANTS[name]
    x, w, labels = make_problem(seed=1, rule=rule)
    x, w = (a.astype(dtype).astype(np.float64) for a in (x, w))
    methods = ("fd", "complex") if dtype == np.float64 else ("complex",)
    refs = {k: v for k, (v, _) in reference_updates(x, w, labels, N_CLASSES, rule, methods).items()}
    refs["numpy64"] = local_update(x, w, labels, n_classes=N_CLASSES, **kwargs_of(rule))
    return x.astype(dtype), w.astype(dtype), labels, refs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_update_matches_references(name, backend, dtype):
    x, w, labels, refs = references(name, dtype)
    dw = local_update(x, w, labels, n_classes=N_CLASSES, backend=backend, **kwargs_of(VARIANTS[name]))
    assert isinstance(dw, np.ndarray) and dw.dtype == dtype and dw.shape == w.shape
    for method, tol in TOL[dtype].items():
        err, worst = relative_error(dw, refs[method])
        assert err <= tol, f"{name} {backend} {np.dtype(dtype).name} vs {method}: {err:.2e} at {worst}"


# (m, n_in, n_out, groups, n_classes): m = 2, n_out = 2 × groups, m > n_in, wide and narrow.
SHAPES = [(2, 3, 4, None, 2), (2, 4, 6, 3, 2), (9, 3, 6, 3, 3), (7, 2, 8, 4, 4),
          (5, 6, 12, 3, 3), (3, 7, 10, 5, 2), (12, 4, 9, 3, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_random_shapes(shape, backend):
    m, n_in, n_out, groups, n_classes = shape
    rng = np.random.default_rng(m * 100 + n_out)
    for trial in range(3):
        rule = Rule(kernel=KERNELS[rng.integers(3)], activation=ACTIVATIONS[rng.integers(4)],
                    label_kernel=LABEL_KERNELS[rng.integers(2)], groups=groups,
                    p=float(rng.uniform(0, 0.9)), delta=float(rng.uniform(0.2, 2)),
                    gamma=float(rng.uniform(0, 3)), sigma=float(rng.uniform(0.5, 5)))
        x, w, labels = make_problem(m, n_in, n_out, n_classes, seed=trial, rule=rule)
        dw = local_update(x, w, labels, n_classes=n_classes, backend=backend, **kwargs_of(rule))
        ref = complex_step_gradient(lambda v: pairwise.objective(x, v, labels, n_classes, rule), w)
        err, worst = relative_error(dw, ref)
        assert err <= 1e-10, f"{shape} {rule}: {err:.2e} at {worst}"
        if rule.kernel == "gaussian":
            pair = pairwise.pairwise_update(x, w, labels, n_classes, rule)
            assert relative_error(dw, pair)[0] <= 1e-12


@pytest.mark.parametrize("label_kernel", LABEL_KERNELS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("groups", [None, 4])
def test_fast_path_equals_pair_sums(groups, activation, label_kernel, backend, make_problem):
    x, w, labels = make_problem(seed=3)
    rule = Rule(groups=groups, activation=activation, label_kernel=label_kernel, sigma=2.0)
    dw = local_update(x, w, labels, n_classes=3, backend=backend, **kwargs_of(rule))
    pair = pairwise.pairwise_update(x, w, labels, 3, rule)
    assert relative_error(dw, pair)[0] <= 1e-12


@pytest.mark.parametrize("groups", [None, 4])
def test_third_factor_equals_pairwise(groups, backend, make_problem):
    x, w, labels = make_problem(seed=4)
    rule = Rule(groups=groups, sigma=2.0, p=0.3)
    M = third_factor(x, w, labels, n_classes=3, backend=backend, **kwargs_of(rule))
    ref = pairwise.third_factor(x, w, labels, 3, rule)
    assert M.shape == ((6, 6) if groups is None else (4, 6, 6))
    assert relative_error(M.reshape(-1, 6), ref.reshape(-1, 6))[0] <= 1e-12
    M32 = third_factor(x.astype(np.float32), w.astype(np.float32), labels, n_classes=3,
                       backend=backend, **kwargs_of(rule))
    assert M32.dtype == np.float32


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_layer_output(activation, backend, make_problem):
    x, w, _ = make_problem(seed=5)
    z = layer_output(x, w, activation=activation, backend=backend)
    np.testing.assert_allclose(z, activate(x @ w.T, activation)[0], rtol=1e-13, atol=1e-14)
    rule = Rule(activation=activation, groups=4, p=0.3, delta=0.7)
    r = layer_output(x, w, activation=activation, groups=4, p=0.3, delta=0.7, divisive=True,
                     backend=backend)
    _, _, zhat, u, _ = pairwise.representation(x, w, rule)
    np.testing.assert_allclose(r, zhat / np.repeat(u ** 0.3, 2, axis=1), rtol=1e-12, atol=1e-14)
    # without divisive normalisation a grouped layer passes z on unchanged
    np.testing.assert_allclose(layer_output(x, w, activation=activation, groups=4, backend=backend),
                               z, rtol=1e-13, atol=1e-14)
    r32 = layer_output(x.astype(np.float32), w.astype(np.float32), activation=activation,
                       groups=4, p=0.3, delta=0.7, divisive=True, backend=backend)
    assert r32.dtype == np.float32
    np.testing.assert_allclose(r32, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_objective_equals_definition(name, backend):
    rule = VARIANTS[name]
    x, w, labels = make_problem(seed=6, rule=rule)
    L = local_objective(x, w, labels, n_classes=3, backend=backend, **kwargs_of(rule))
    ref = pairwise.objective(x, w, labels, 3, rule)
    assert isinstance(L, float)
    assert abs(L - ref) <= 1e-12 * max(1.0, abs(ref))


@pytest.mark.parametrize("label_kernel", LABEL_KERNELS)
def test_integer_labels_equal_one_hot(label_kernel, backend, make_problem):
    x, w, labels = make_problem(m=8, n_classes=4, seed=7)
    onehot = np.eye(4)[labels]
    kw = dict(kernel="gaussian", groups=4, label_kernel=label_kernel, backend=backend)
    a = local_update(x, w, labels, n_classes=4, **kw)
    np.testing.assert_array_equal(a, local_update(x, w, onehot, **kw))
    with pytest.warns(UserWarning, match=r"n_classes not given: taken as the largest label \+ 1 = 4"):
        np.testing.assert_array_equal(a, local_update(x, w, labels, **kw))   # n_classes = max + 1
    np.testing.assert_array_equal(a, local_update(x, w, labels.astype(np.float64), n_classes=4, **kw))
    assert local_objective(x, w, labels, n_classes=4, **kw) == local_objective(x, w, onehot, **kw)
    # a class absent from the batch still counts when n_classes says so (Eq. 35: -1/(n-1))
    sub = labels < 3
    if label_kernel == "cosine" and sub.sum() >= 2:
        b3 = local_update(x[sub], w, labels[sub], n_classes=3, **kw)
        b4 = local_update(x[sub], w, labels[sub], n_classes=4, **kw)
        assert not np.allclose(b3, b4)


def test_linear_label_kernel_is_eq36(make_problem):
    """Eq. 36: centred linear kernel 1[y_i = y_j] + Σ p_k² - p_yi - p_yj, batch frequencies."""
    x, w, labels = make_problem(m=7, seed=8)
    rule = Rule(label_kernel="linear")
    Ky = pairwise.label_kernel(labels, 3, rule)
    freq = np.bincount(labels, minlength=3) / 7
    expect = ((labels[:, None] == labels[None, :]) + (freq ** 2).sum()
              - freq[labels][:, None] - freq[labels][None, :])
    np.testing.assert_allclose(Ky, expect, atol=1e-15)
    a = local_update(x, w, labels, n_classes=3, label_kernel="linear")
    b = local_update(x, w, labels, n_classes=3, label_kernel="cosine")
    assert not np.allclose(a, b)


def test_float32_in_float32_out(backend, make_problem):
    x, w, labels = make_problem(seed=9)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    for kernel in KERNELS:
        dw = local_update(x32, w32, labels, n_classes=3, kernel=kernel, groups=4, backend=backend)
        assert dw.dtype == np.float32
    assert local_update(x, w, labels, backend=backend).dtype == np.float64
    assert layer_output(x32, w32, backend=backend).dtype == np.float32


def test_torch_objective_equals_definition(make_problem):
    torch = pytest.importorskip("torch")
    from threefactor.verify.torch_ref import objective_torch, torch_available
    assert torch_available()
    for name in ["gaussian/grp+div/selu", "cosine/plain/relu", "linear/grp/lrelu/ylinear"]:
        rule = VARIANTS[name]
        x, w, labels = make_problem(seed=10)
        L = objective_torch(torch.tensor(x), torch.tensor(w), torch.tensor(labels), 3, rule)
        assert L.dtype == torch.float64 and L.dim() == 0
        assert abs(float(L) - pairwise.objective(x, w, labels, 3, rule)) <= 1e-13
        L32 = objective_torch(torch.tensor(x, dtype=torch.float32),
                              torch.tensor(w, dtype=torch.float32), torch.tensor(labels), 3, rule)
        assert L32.dtype == torch.float32


def test_layer_objective_is_the_two_phsic_terms():
    """The regrouped sum of objective.layer_objective equals pHSIC(Z,Z) - γ pHSIC(Y,Z) (Eq. 9)."""
    from threefactor.rule.objective import layer_objective
    from threefactor.verify.naive import phsic            # the literal double sums of Eq. 34
    rng = np.random.default_rng(3)
    for m in (1, 5, 64):
        K, Ky = rng.random((m, m)), rng.standard_normal((m, m))
        K, gamma = K + K.T, rng.uniform(0.5, 3.0)
        ref = phsic(K, K) - gamma * phsic(Ky, K)
        assert abs(layer_objective(K, Ky, gamma) - ref) <= 1e-12 * max(1.0, abs(ref))
    K32 = K.astype(np.float32)
    assert layer_objective(K32, Ky.astype(np.float32), gamma).dtype == np.float32
