"""Checks of what a user passes, each written once, with errors that name the argument.

Used by the public functions (:mod:`threefactor.api`), the networks' batches
(:mod:`threefactor.nn`), the optimisers and the online rule
(:mod:`threefactor.rule.online`).  Conversion to a backend's arrays is
:mod:`threefactor.arrays`.
"""
from __future__ import annotations

import warnings

import numpy as np

from threefactor.arrays import as_array, real_array, type_name


def check_lr(lr) -> float:
    """The learning rate as a float, finite and >= 0, else an error naming ``lr``."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise TypeError(f"lr must be a real number >= 0, got {type(lr).__name__} {lr!r}")
    if not (np.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {float(lr)!r}")
    return float(lr)


def check_labels(be, labels, name, shape, n_classes, what="one integer label per stream or pair"):
    """Integer labels of shape ``shape`` as an int64 backend array, else an error naming ``name``.

    Host labels are range-checked ([0, n_classes)); labels already on the device are not, since
    reading their min and max would synchronise every step (the data loaders check a data set's labels).
    ``what`` says in the shape error what one label is.
    """
    labels = real_array(be, labels, name)
    if labels.shape != shape:
        shown = f"(m,) = {shape}" if what.endswith("row of x") else f"{shape}"
        raise ValueError(f"{name} must have shape {shown} ({what}), got {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {labels.dtype}")
    if labels.size and isinstance(labels, np.ndarray) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must be in [0, n_classes) = [0, {n_classes}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return be.asarray(labels, dtype=np.int64)


def check_batch(net, x, labels, sample_shape, expected):
    """A training or test batch of ``net`` (its ``backend``, ``dtype``, ``n_classes``): ``x`` of shape
    (m, *sample_shape) as a backend array of the net's dtype and ``labels`` (m,) as int64, or an error
    naming the argument (``expected`` spells x's shape).  Host arrays are also checked for NaN/Inf (x)
    and for labels outside [0, n_classes); arrays already on a device are not read (no synchronisation)."""
    be = net.backend
    x = real_array(be, x, "x")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x has no samples (m=0)")
    check_finite(x, "x")
    x = be.asarray(x, dtype=net.dtype)
    if labels is None:
        return x
    return x, check_labels(be, labels, "labels", (x.shape[0],), net.n_classes,
                           "one integer class per row of x")


def number_array(be, value, argument):
    """``value`` as an array of ``be`` (as it is) or of numpy (:func:`threefactor.arrays.as_array`); a
    TypeError naming ``argument`` when what was given is not an array of numbers (None, strings)."""
    arr = as_array(be, value, argument)
    if not be.is_native(value) and arr.dtype.kind in "OUSV":
        raise TypeError(f"{argument} must be an array of numbers, got {type_name(value)}"
                        + (f" of dtype {arr.dtype}" if arr.dtype.kind != "O" else ""))
    return arr


def float_dtype(arrays, names):
    """The float dtype the arrays compute in: theirs if float32 or float64, else float64; a TypeError
    naming the first that does not hold real numbers."""
    for arr, name in zip(arrays, names):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    dt = np.result_type(*[a.dtype for a in arrays])
    if dt.kind != "f":
        return np.dtype(np.float64)
    if dt not in (np.float32, np.float64):
        return np.dtype(np.float64)
    return dt


def check_finite(arr, name, be=None, error=ValueError):
    """Raise ``error(...)`` naming ``name`` if ``arr`` holds NaN or Inf.

    Host (numpy) arrays are always checked.  Arrays of a device backend are checked only when ``be``
    is given (one synchronisation: the public functions); without it they pass unread, since reading
    a flag back would wait for the device at every training step.  ``error`` is an exception class
    called with the message (ValueError) or, when it has a ``what`` argument (NonFiniteError of the
    online rule), with the name.
    """
    if isinstance(arr, np.ndarray):
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise _non_finite(error, name)
    elif be is not None and not bool(be.xp.isfinite(arr).all()):
        raise _non_finite(error, name)


def _non_finite(error, name):
    return error(name) if getattr(error, "names_argument", False) else error(f"{name} contains NaN or Inf")


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


def labels_of(be, y, m, n_classes, checks=None):
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
    y = number_array(be, y, "y")
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
                          UserWarning, stacklevel=7)   # the user's call of a public function (threefactor.api)
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
