"""The public face of the core engine: validated inputs in, one rule out.

These five functions are a fixed contract (names and keywords)::

    local_objective(x, w, y, **rule) -> float            L = pHSIC(Z,Z) - γ pHSIC(Y,Z)   (Eq. 9, 34)
    local_update(x, w, y, **rule)    -> (n_out, n_in)    ΔW = -dL/dW                      (Eq. 10, 40)
    third_factor(x, w, y, **rule)    -> (m, m) | (c, m, m)   M of Eq. 12b / 22 (Gaussian)
    layer_output(x, w, **rule)       -> (m, n_out)       z, or r = ẑ/u^p if divisive (Eq. 21)
    available_backends()             -> names usable here

A 4-D x (m, C_in, H, W) with w (C_out, C_in, kh, kw) is a conv layer (keywords
``padding``, ``pool``): the same rule on pool(f(conv(x, w))) flattened per sample,
delegated to :mod:`threefactor.conv_rule`.
"""
from __future__ import annotations

import warnings

import numpy as np

from threefactor.rule import engine
from threefactor.arrays import as_array, type_name
from threefactor.backends import get_backend
from threefactor.rule.rules import Rule
from threefactor.rule.third_factor import third_factor_grouped, third_factor_plain


def _array(be, value, argument):
    """``value`` as an array of ``be`` (as it is) or of numpy (:func:`threefactor.arrays.as_array`); a
    TypeError naming ``argument`` when what was given is not an array of numbers (None, strings)."""
    arr = as_array(be, value, argument)
    if not be.is_native(value) and arr.dtype.kind in "OUSV":
        raise TypeError(f"{argument} must be an array of numbers, got {type_name(value)}"
                        + (f" of dtype {arr.dtype}" if arr.dtype.kind != "O" else ""))
    return arr


def _float_dtype(arrays, names):
    for arr, name in zip(arrays, names):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    dt = np.result_type(*[a.dtype for a in arrays])
    if dt.kind != "f":
        return np.dtype(np.float64)
    if dt not in (np.float32, np.float64):
        return np.dtype(np.float64)
    return dt


def _check_finite(be, arr, name):
    if not bool(be.xp.isfinite(arr).all()):
        raise ValueError(f"{name} contains NaN or Inf")


class Checks:
    """Input checks as flags, read back together: on a device one synchronisation for all of them,
    after the caller has queued its work (the work itself never depends on a flag being true).

    ``add(flag, fail)``: ``flag`` a 0-d boolean (device) array or bool; ``fail()`` raises the error
    for a false flag (it may look at the inputs again: that is the error path).  :meth:`verify`
    reads every flag at once and calls the ``fail`` of the first false one, in the order added.
    ``immediate=True`` checks each flag as it is added (host arrays), so later steps never see
    bad values (no NaN cast to an integer).
    """

    def __init__(self, immediate=False):
        self.items, self.immediate = [], immediate

    def add(self, flag, fail):
        """Queue a check; with ``immediate`` (host arrays: reading a flag costs nothing) run it now."""
        if self.immediate:
            if not bool(flag):
                fail()
            return
        self.items.append((flag, fail))

    def verify(self, be, extra=()):
        """Raise for the first false flag; return the values of ``extra`` (0-d arrays), read back in
        the same transfer as the flags.  The flags are used up: a later call reads only new ones."""
        items, self.items = self.items, []
        if not items and not extra:
            return []
        values = be.scalars([flag for flag, _ in items] + list(extra))
        for ok, (_, fail) in zip(values, items):
            if not ok:
                fail()
        return values[len(items):]


def _fail(error):
    def fail():
        raise error
    return fail


def _labels(be, y, m, n_classes, checks=None):
    """Integer labels (m,) and the number of classes from one-hot or integer ``y``.

    Labels are checked where they are: host labels on the host, device labels on the device,
    with every flag read back at once.  Given ``checks`` (a :class:`Checks`) and device labels whose
    class count is known (``n_classes``, or one-hot columns), the flags are left in ``checks`` for
    the caller to verify after its work is queued; otherwise they are verified here.
    """
    if y is None:
        raise TypeError("y is required: one-hot labels (m, n_classes) or integer labels (m,)")
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
            raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__} {n_classes!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (the label kernel of Eq. 35 needs two classes), "
                             f"got n_classes={n_classes}")
    y = _array(be, y, "y")
    device = be.is_native(y) and be.xp is not np
    xp = be.xp if device else np                 # host y given to a device backend: no device work
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must hold labels (integers or one-hot rows), got dtype {y.dtype}")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be one-hot labels (m, n_classes) or integer labels (m,), got shape {tuple(y.shape)}")
    if y.shape[0] != m:
        raise ValueError(f"y has {y.shape[0]} rows but x has m={m} samples")
    mine = Checks(immediate=not device)
    if y.dtype.kind == "f":
        mine.add(xp.isfinite(y).all(), _fail(ValueError("y contains NaN or Inf")))
    if y.ndim == 2:
        k = y.shape[1]
        if n_classes is not None and n_classes != k:
            raise ValueError(f"n_classes={n_classes} disagrees with one-hot y of {k} columns")
        mine.add(((y == 0) | (y == 1)).all() & (y.sum(axis=1) == 1).all(),
                 _fail(ValueError("y rows must be one-hot (a single 1, zeros elsewhere)")))
        labels, n = y.argmax(axis=1), k
    else:
        if y.dtype.kind == "f":
            mine.add((y == xp.round(y)).all(), _fail(ValueError("integer labels y must be whole numbers")))
            mine.add((xp.abs(y) < 2.0 ** 53).all(),      # before the cast to int64, which would wrap
                     _fail(ValueError("labels y must be class indices in [0, n_classes); "
                                      "got a label of magnitude >= 2**53")))
        labels = y.astype(np.int64)
        mine.add(labels.min() >= 0, _fail(ValueError("labels y must be >= 0")))
        if n_classes is None:        # the class count is needed now: read it with the flags (one read-back)
            n = int(mine.verify(be, [labels.max()])[0]) + 1
            warnings.warn(f"n_classes not given: taken as the largest label + 1 = {n} from this batch; the "
                          "label kernel (Eq. 35-36) depends on it, so pass n_classes= (or one-hot y)",
                          UserWarning, stacklevel=4)
        else:
            n = int(n_classes)

            def out_of_range():
                raise ValueError(f"label {int(labels.max())} is out of range for n_classes={n}")
            mine.add(labels.max() < n, out_of_range)
    if n < 2:
        mine.verify(be)
        raise ValueError(f"n_classes must be >= 2 (the label kernel of Eq. 35 needs two classes), got {n}")
    if checks is not None and device:
        checks.items.extend(mine.items)
    else:
        mine.verify(be)
    return be.asarray(labels, dtype=np.int64), n


def prepare(x, w, y, backend, n_classes=None, *, need_labels=True, check_finite=True, checks=None):
    """Validate and convert (x, w, y) for ``backend``; returns (be, x, w, labels, n, to_user).

    With ``check_finite=False`` the caller promises :func:`check_forward` on a = x wᵀ
    instead: NaN/Inf anywhere in x or w reaches a (NaN·0 = NaN, Inf·0 = NaN), and a is
    smaller than w, so the check costs less than scanning the weights.  ``checks``: a
    :class:`Checks` that may receive the device labels' flags (see :func:`_labels`).
    """
    be = get_backend(backend)
    if need_labels and y is None:
        raise TypeError("y is required: one-hot labels (m, n_classes) or integer labels (m,)")
    x = _array(be, x, "x")
    w = _array(be, w, "w")
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
    dt = _float_dtype([x, w], ["x", "w"])
    x = be.asarray(x, dtype=dt)
    w = be.asarray(w, dtype=dt)
    if check_finite:
        _check_finite(be, x, "x")
        _check_finite(be, w, "w")
    labels = n = None
    if need_labels:
        labels, n = _labels(be, y, x.shape[0], n_classes, checks)
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
    from threefactor.rule.conv_rule import check_padding
    check_padding(padding)
    return False


def _conv(name, x, w, y, rule, padding, pool, backend, n_classes):
    """Call the conv layer's version of public function ``name`` (threefactor.conv_rule)."""
    from threefactor.rule import conv_rule
    return getattr(conv_rule, name)(x, w, y, rule, padding, pool, backend, n_classes)


def _pass(x, w, y, kernel, sigma, gamma, activation, slope, groups, p, delta, backend,
          n_classes, label_kernel):
    """(rule, be, x, lp, to_user, check) of a public call: call ``check()`` once the result is queued.

    a = x wᵀ must be finite (:func:`check_forward`).  On the host that is checked at once and
    ``check`` does nothing; on a device its flag and the device labels' flags are queued here and
    ``check`` reads them back together after the caller has queued its work, so the call's one
    synchronisation waits for work on its way (with device labels and no ``n_classes``, the class
    count is read before: two).
    """
    rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
    checks = Checks()
    be, x, w, labels, n, to_user = prepare(x, w, y, backend, n_classes, check_finite=False, checks=checks)
    rule.check_width(w.shape[0])
    with np.errstate(over="ignore", invalid="ignore"):   # bad inputs are reported just below
        lp = engine.layer_pass(rule, x, w, labels, n, be)
    if be.xp is np:
        check_forward(be, lp.a, x, w)
        return rule, be, x, lp, to_user, lambda: None
    checks.add(be.xp.isfinite(lp.a).all(), lambda: check_forward(be, lp.a, x, w))
    return rule, be, x, lp, to_user, lambda: checks.verify(be)


def check_forward(be, a, x, w, finite=None):
    """Raise if the pre-activation a = x wᵀ is not finite, naming x or w when they are the cause
    (``finite``: ``isfinite(a).all()`` already queued, as a 0-d array)."""
    if bool(be.xp.isfinite(a).all() if finite is None else finite):
        return
    _check_finite(be, x, "x")
    _check_finite(be, w, "w")
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
        The rule (see :class:`threefactor.rules.Rule`).
    backend : {"numpy", "numba", "cupy"}
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
    if _conv_layer(x, w, pool, padding):
        rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
        return _conv("local_objective", x, w, y, rule, padding, pool, backend, n_classes)
    _, _, _, lp, _, check = _pass(x, w, y, kernel, sigma, gamma, activation, slope, groups, p, delta,
                                  backend, n_classes, label_kernel)
    value = lp.objective()
    check()
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
    if _conv_layer(x, w, pool, padding):
        rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
        dw = _conv("local_update", x, w, y, rule, padding, pool, backend, n_classes)
        if out is None:
            return dw
        _check_out(get_backend(backend), out, dw.shape, dw.dtype, x)
        out[...] = dw
        return out
    _, be, x, lp, to_user, check = _pass(x, w, y, kernel, sigma, gamma, activation, slope, groups, p,
                                         delta, backend, n_classes, label_kernel)
    if out is not None:
        _check_out(be, out, (lp.a.shape[1], x.shape[1]), x.dtype, x)
    dw = be.hebbian(lp.post(), x) if out is None else be.hebbian(lp.post(), x, out=out)
    check()
    return dw if out is not None else to_user(dw)


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
    so that :func:`threefactor.pairwise.pairwise_update` gives ΔW = -dL/dW.
    Only the Gaussian kernel has this 3-factor form (the cosine kernel's update
    is not one: paper App. B.4).
    """
    if kernel != "gaussian":
        raise ValueError(f"third_factor is defined for kernel='gaussian' only (the 3-factor form of "
                         f"Eq. 12 / 22), got kernel={kernel!r}")
    if _conv_layer(x, w, pool, padding):
        rule = _rule(kernel, sigma, gamma, activation, slope, groups, p, delta, label_kernel)
        return _conv("third_factor", x, w, y, rule, padding, pool, backend, n_classes)
    rule, be, x, lp, to_user, check = _pass(x, w, y, kernel, sigma, gamma, activation, slope, groups, p,
                                            delta, backend, n_classes, label_kernel)
    if rule.grouped:
        g = rule.check_width(lp.z.shape[1])
        M = third_factor_grouped(lp.K, lp.Ky, lp.v, rule.gamma, rule.sigma, rule.p, g, be.xp)
    else:
        M = third_factor_plain(lp.K, lp.Ky, rule.gamma, rule.sigma)
    check()
    return to_user(M)


def layer_output(x, w, *, activation="lrelu", slope=0.01, groups=None, p=0.2, delta=1.0,
                 divisive=False, backend="numpy", padding=1, pool=None):
    """The layer's activity passed on: z = f(x wᵀ), or r = ẑ/u^p when ``divisive`` (Eq. 1, 21).

    Returns an array (m, n_out) of the inputs' dtype; (m, C_out, H', W') for a conv layer.
    """
    rule = Rule(activation=activation, slope=slope, groups=groups, p=p, delta=delta)
    rule.check_divisive(divisive)
    if _conv_layer(x, w, pool, padding):
        from threefactor.rule import conv_rule
        return conv_rule.layer_output(x, w, rule, divisive, padding, pool, backend)
    be, x, w, _, _, to_user = prepare(x, w, None, backend, need_labels=False)
    rule.check_width(w.shape[0])
    _, z, _ = be.forward(x, w, rule.activation, rule.slope)
    if not divisive:
        return to_user(z)
    zhat, u, _ = be.group_stats(z, rule.groups, rule.p, rule.delta)
    return to_user(be.divisive_norm(zhat, u, rule.p))


def available_backends():
    """Names of the backends usable on this machine, e.g. ``("numpy", "numba")``."""
    from threefactor.backends import available_backends as _available
    return _available()
