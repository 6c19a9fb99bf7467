"""The public face of the core engine: validated inputs in, one rule out.

These five functions are a fixed contract (names and keywords)::

    local_objective(x, w, y, **rule) -> float            L = pHSIC(Z,Z) - γ pHSIC(Y,Z)   (Eq. 9, 34)
    local_update(x, w, y, **rule)    -> (n_out, n_in)    ΔW = -dL/dW                      (Eq. 10, 40)
    third_factor(x, w, y, **rule)    -> (m, m) | (c, m, m)   M of Eq. 12b / 22 (Gaussian)
    layer_output(x, w, **rule)       -> (m, n_out)       z, or r = ẑ/u^p if divisive (Eq. 21)
    available_backends()             -> names usable here

A 4-D x (m, C_in, H, W) with w (C_out, C_in, kh, kw) is a conv layer (keywords
``padding``, ``pool``): the same rule on pool(f(conv(x, w))) flattened per sample
(:mod:`threefactor.rule.conv_rule`).  Each public function is written once, for
both kinds of layer: validation and conversion (:func:`prepare`,
:func:`prepare_conv`, checks from :mod:`threefactor.validate`), one forward pass
(:func:`_layer`), then the quantity asked for.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from threefactor.rule import conv_rule
from threefactor.rule import engine
from threefactor.backends import get_backend
from threefactor.rule.rules import Rule
from threefactor.rule.third_factor import third_factor_grouped, third_factor_plain
from threefactor.arrays import type_name
from threefactor.validate import Checks, check_finite, float_dtype, labels_of, number_array


def prepare(x, w, y, backend, n_classes=None, *, need_labels=True, check_finite=True, checks=None):
    """Validate and convert a dense layer's (x, w, y) for ``backend``; returns (be, x, w, labels, n, to_user).

    With ``check_finite=False`` the caller promises :func:`check_forward` on a = x wᵀ
    instead: NaN/Inf anywhere in x or w reaches a (NaN·0 = NaN, Inf·0 = NaN), and a is
    smaller than w, so the check costs less than scanning the weights.  ``checks``: a
    :class:`~threefactor.validate.Checks` that may receive the device labels' flags
    (see :func:`threefactor.validate.labels_of`).
    """
    be = get_backend(backend)
    if need_labels and y is None:
        raise TypeError("y is required: one-hot labels (m, n_classes) or integer labels (m,)")
    x = number_array(be, x, "x")
    w = number_array(be, w, "w")
    native = be.is_native(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (m, n_in), got shape {tuple(x.shape)}")
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (n_out, n_in), got shape {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x has n_in={x.shape[1]} columns but w expects n_in={w.shape[1]} (w shape {tuple(w.shape)})")
    if w.shape[0] < 1:
        raise ValueError(f"w has no output neurons (n_out=0, w shape {tuple(w.shape)})")
    if x.shape[1] < 1:
        raise ValueError(f"x has no input features (n_in=0, x shape {tuple(x.shape)})")
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least m=2 samples (a kernel compares pairs), got m={x.shape[0]}")
    return _converted(be, x, w, y, n_classes, native, need_labels, check_finite, checks)


def prepare_conv(x, w, y, backend, n_classes=None, padding=1, pool=None, groups=None):
    """Validate and convert a conv layer's (x, w, y); returns (be, x, w, labels, n, to_user)."""
    be = get_backend(backend)
    x = number_array(be, x, "x")
    w = number_array(be, w, "w")
    native = be.is_native(x)
    conv_rule.check_geometry(x.shape, w.shape, padding, pool, groups)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least m=2 samples (a kernel compares pairs), got m={x.shape[0]}")
    return _converted(be, x, w, y, n_classes, native, y is not None, True, None)


def _converted(be, x, w, y, n_classes, native, need_labels, finite, checks):
    """x and w as arrays of ``be`` in their common float dtype, checked finite (``finite``), and the
    labels of y: (be, x, w, labels, n, to_user)."""
    dt = float_dtype([x, w], ["x", "w"])
    x = be.asarray(x, dtype=dt)
    w = be.asarray(w, dtype=dt)
    if finite:
        check_finite(x, "x", be)
        check_finite(w, "w", be)
    labels = n = None
    if need_labels:
        labels, n = labels_of(be, y, x.shape[0], n_classes, checks)
    to_user = (lambda a: a) if native else be.to_numpy
    return be, x, w, labels, n, to_user


def _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel):
    return Rule(kernel=kernel, sigma=sigma, gamma=gamma, activation=activation, slope=slope,
                groups=groups, p=p, delta=delta, label_kernel=label_kernel)


def _conv_layer(x, w, pool, padding=1):
    """Whether (x, w) is a conv layer (4-D); ``pool`` only makes sense there, and ``padding``, which a
    dense layer ignores, must still be valid (so a typo is not passed over)."""
    if np.ndim(x) == 4 or np.ndim(w) == 4:
        return True
    if pool is not None:
        raise ValueError(f"pool={pool!r} needs a conv layer: x (m, C_in, H, W) and w (C_out, C_in, kh, kw)")
    conv_rule.check_padding(padding)
    return False


class _Layer(NamedTuple):
    """One public call's forward pass, dense or conv.

    lp : the dense engine's LayerPass (a conv layer's on its flattened pooled activity)
    update : (out=None) -> ΔW = -dL/dW of w's shape (written into ``out`` when given);  to_user : backend array -> what the user passes in
    check : () -> None, raises for a bad input whose flag was queued (call once the result is queued)
    """

    be: Any
    lp: engine.LayerPass
    update: Callable
    to_user: Callable
    check: Callable


def _layer(x, w, y, rule, backend, n_classes, padding, pool) -> _Layer:
    """Validate the inputs of a public call and run the layer's forward pass (:class:`_Layer`)."""
    if _conv_layer(x, w, pool, padding):
        return _conv_pass(x, w, y, rule, backend, n_classes, padding, pool)
    return _dense_pass(x, w, y, rule, backend, n_classes)


def _dense_pass(x, w, y, rule, backend, n_classes) -> _Layer:
    """The dense layer's pass.  a = x wᵀ must be finite (:func:`check_forward`): on the host that is
    checked at once and ``check`` does nothing; on a device its flag and the device labels' flags are
    queued here and ``check`` reads them back together after the caller has queued its work, so the
    call's one synchronisation waits for work on its way (with device labels and no ``n_classes``,
    the class count is read before: two)."""
    checks = Checks()
    be, x, w, labels, n, to_user = prepare(x, w, y, backend, n_classes, check_finite=False, checks=checks)
    rule.check_width(w.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):   # bad inputs are reported just below
        lp = engine.layer_pass(rule, x, w, labels, n, be)
    def update(out=None):
        return be.hebbian(lp.post(), x) if out is None else be.hebbian(lp.post(), x, out=out)
    if be.xp is np:
        check_forward(be, lp.a, x, w)
        return _Layer(be, lp, update, to_user, lambda: None)
    checks.add(be.xp.isfinite(lp.a).all(), lambda: check_forward(be, lp.a, x, w))
    return _Layer(be, lp, update, to_user, lambda: checks.verify(be))


def _conv_pass(x, w, y, rule, backend, n_classes, padding, pool) -> _Layer:
    """The conv layer's pass (inputs checked finite before, the activity after it)."""
    if y is None:
        raise TypeError("y is required: one-hot labels (m, n_classes) or integer labels (m,)")
    be, x, w, labels, n, to_user = prepare_conv(x, w, y, backend, n_classes, padding, pool, rule.groups)
    c_out, h2, w2 = conv_rule.check_geometry(x.shape, w.shape, padding, pool)
    rule.check_width(c_out * h2 * w2)
    with np.errstate(over="ignore", invalid="ignore"):     # reported just below
        cp = conv_rule.conv_layer_pass(rule, x, w, labels, n, be, int(padding), pool)
    if not bool(be.xp.isfinite(cp.lp.z).all()):
        raise ValueError("conv(x, w) overflows (Inf or NaN in the layer's activity): x and w are finite but "
                         f"too large for {cp.lp.z.dtype}")
    def update(out=None):
        dw = cp.update()
        if out is None:
            return dw
        out[...] = dw
        return out
    return _Layer(be, cp.lp, update, to_user, lambda: None)


def check_forward(be, a, x, w, finite=None):
    """Raise if the pre-activation a = x wᵀ is not finite, naming x or w when they are the cause
    (``finite``: ``isfinite(a).all()`` already queued, as a 0-d array)."""
    if bool(be.xp.isfinite(a).all() if finite is None else finite):
        return
    check_finite(x, "x", be)
    check_finite(w, "w", be)
    raise ValueError("x @ w.T overflows (Inf in the pre-activation a): x and w are finite but too "
                     f"large for {a.dtype}")


def local_objective(x, w, y, *, kernel="gaussian", sigma=5.0, gamma=2.0, activation="lrelu",
                    slope=0.01, groups=None, p=0.2, delta=1.0, backend="numpy",
                    n_classes=None, label_kernel="cosine", padding=1, pool=None):
    """Layer objective L = pHSIC(Z, Z) - γ pHSIC(Y, Z) on one batch (Eq. 9, 34).

    Parameters
    ----------
    x : array (m, n_in)
        The layer's input (previous layer's output).
    w : array (n_out, n_in)
        The layer's weights.
    y : array (m, n_classes) one-hot, or (m,) integer labels
    kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel
        The rule (see :class:`threefactor.Rule`).
    backend : str or Backend
        "numpy", "numba", "cupy" or a registered backend (:func:`threefactor.backends.register_backend`).
    n_classes : int, optional
        Number of classes for integer labels.  Without it the largest label + 1 of this batch
        is taken, with a warning: the label kernel (Eq. 35-36) depends on the class count.

    Returns
    -------
    float

    For a conv layer x is (m, C_in, H, W) and w (C_out, C_in, kh, kw); ``padding``
    (zero padding of the stride-1 convolution) and ``pool`` (None or "max", 2×2)
    apply, and ``groups`` must divide C_out (groups are blocks of whole channels).
    """
    rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
    layer = _layer(x, w, y, rule, backend, n_classes, padding, pool)
    value = layer.lp.objective()
    layer.check()
    return value


def local_update(x, w, y, *, kernel="gaussian", sigma=5.0, gamma=2.0, activation="lrelu",
                 slope=0.01, groups=None, p=0.2, delta=1.0, backend="numpy",
                 n_classes=None, label_kernel="cosine", padding=1, pool=None, out=None):
    """Explicit 3-factor update ΔW = -dL/dW, exactly (Eq. 10, 12, 22, 40-48).

    Same parameters as :func:`local_objective`.  Returns an array (n_out, n_in)
    of the inputs' dtype (float32 in, float32 out; float64 in, float64 out).
    Computed as ΔW = postᵀ x with post = -dL/da, the third factor folded in
    through the graph Laplacian of A = (2 k̊z - γ k̊y) ⊙ K / m²: one update GEMM
    plus one kernel GEMM, never a pair loop.  A conv layer returns (C_out, C_in, kh, kw).

    ``out``: an array of the backend (numpy for numpy/numba) with the result's shape and
    dtype, C-contiguous and writeable, not sharing memory with ``x``: the update GEMM
    writes into it (same numbers as without ``out``) and it is returned.  For calls in
    a loop; on the CPU the first such call also keeps freed buffers in the process's
    heap (:func:`threefactor.heap.keep_for_loops`), so later calls pay no fresh page
    faults.  A conv layer's update is copied into ``out``.
    """
    rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
    layer = _layer(x, w, y, rule, backend, n_classes, padding, pool)
    if out is None:
        dw = layer.update()
        layer.check()
        return layer.to_user(dw)
    _check_out(layer.be, out, tuple(np.shape(w)), layer.lp.z.dtype, x)
    layer.update(out=out)
    layer.check()
    return out


def _check_out(be, out, shape, dtype, x):
    """A clear error unless ``out`` can take the update: backend array, shape, dtype, layout."""
    if not be.is_native(out) or isinstance(out, np.matrix):
        raise TypeError(f"out must be a {be.xp.__name__} array (backend {be.name!r}), got {type_name(out)}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {np.dtype(dtype).name} (the update's), "
                         f"got shape {tuple(out.shape)} and dtype {out.dtype}")
    if not out.flags.c_contiguous or (be.xp is np and not out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable")
    share = getattr(be.xp, "may_share_memory", None)          # numpy's and CuPy's
    if share is not None and share(out, x):
        raise ValueError("out must not share memory with x (the update reads x while writing out)")
    if be.xp is np:
        from threefactor.heap import keep_for_loops
        keep_for_loops()


def third_factor(x, w, y, *, kernel="gaussian", sigma=5.0, gamma=2.0, activation="lrelu",
                 slope=0.01, groups=None, p=0.2, delta=1.0, backend="numpy",
                 n_classes=None, label_kernel="cosine", padding=1, pool=None):
    """The third factor M of the Gaussian rules (Eq. 12b; Eq. 22, 47 with groups).

    Returns (m, m) for the plain rule, (groups, m, m) for the grouped one, scaled
    so that :func:`threefactor.verify.naive.pairwise_update` gives ΔW = -dL/dW.
    Only the Gaussian kernel has this 3-factor form (the cosine kernel's update
    is not one: paper App. B.4).
    """
    from threefactor.rule.kernels import KERNEL_NAMES
    if KERNEL_NAMES.get(kernel) != "gaussian":       # any spelling: "Gaussian", "gauss"
        raise ValueError(f"third_factor is defined for kernel='gaussian' only (the 3-factor form of "
                         f"Eq. 12 / 22), got kernel={kernel!r}")
    rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
    layer = _layer(x, w, y, rule, backend, n_classes, padding, pool)
    lp = layer.lp
    if rule.grouped:
        g = rule.check_width(lp.z.shape[1])
        M = third_factor_grouped(lp.K, lp.Ky, lp.v, rule.gamma, rule.sigma, rule.p, g, layer.be.xp)
    else:
        M = third_factor_plain(lp.K, lp.Ky, rule.gamma, rule.sigma)
    layer.check()
    return layer.to_user(M)


def layer_output(x, w, *, activation="lrelu", slope=0.01, groups=None, p=0.2, delta=1.0,
                 divisive=False, backend="numpy", padding=1, pool=None):
    """The layer's activity passed on: z = f(x wᵀ), or r = ẑ/u^p when ``divisive`` (Eq. 1, 21).

    Returns an array (m, n_out) of the inputs' dtype; (m, C_out, H', W') for a conv layer
    (z = pool(f(conv(x, w))), groups are blocks of whole channels).
    """
    rule = Rule(activation=activation, slope=slope, groups=groups, p=p, delta=delta)
    rule.check_divisive(divisive)
    if _conv_layer(x, w, pool, padding):
        be, x, w, _, _, to_user = prepare_conv(x, w, None, backend, None, padding, pool, rule.groups)
        c_out, h2, w2 = conv_rule.check_geometry(x.shape, w.shape, padding, pool)
        rule.check_width(c_out * h2 * w2)
        z = conv_rule.activity(rule, x, w, int(padding), pool, be, derivatives=False).z
    else:
        be, x, w, _, _, to_user = prepare(x, w, None, backend, need_labels=False)
        rule.check_width(w.shape[0])
        _, z, _ = be.forward(x, w, rule.activation, rule.slope)
    if not divisive:
        return to_user(z)
    m = z.shape[0]
    zhat, u, _ = be.group_stats(z.reshape(m, -1), rule.groups, rule.p, rule.delta)
    return to_user(be.divisive_norm(zhat, u, rule.p).reshape(z.shape))


def available_backends():
    """Names of the backends usable on this machine, e.g. ``("numpy", "numba")``, registered ones included."""
    from threefactor.backends import available_backends as _available
    return _available()
