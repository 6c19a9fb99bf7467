"""The numpy-like functions of the emulated ``cupy`` namespace.

Each runs numpy's function on the device buffers and returns device arrays; a host
(numpy) array among the arguments raises ``TypeError`` as in CuPy, except where
CuPy itself copies host data to the device (``asarray``, ``array``, the ``*_like``
creators, index arrays).  Functions that CuPy implements with a host round trip
(``bincount`` without a known size, ``unique``, ``nonzero``, one-argument ``where``)
count as host synchronisations.  Only names that CuPy has are provided, so a call
that CuPy lacks fails here too (``AttributeError``).
"""
from __future__ import annotations

import numpy as np

from . import device
from .array import call, ndarray, poison, unwrap, wrap

#: numpy functions that CuPy provides with the same signature (device arrays in and out).
DELEGATED = """
abs absolute add all allclose amax amin angle any append arccos arccosh arcsin arcsinh arctan arctan2
arctanh argmax argmin argsort around array_equal atleast_1d atleast_2d atleast_3d average
bitwise_and bitwise_or bitwise_xor broadcast_arrays broadcast_to cbrt ceil clip column_stack
concatenate conj conjugate copysign corrcoef cos cosh count_nonzero cov cross cumprod cumsum deg2rad
diag diagflat diagonal diff divide dot dsplit dstack einsum equal exp exp2 expand_dims expm1 eye fabs
fix flip fliplr flipud float_power floor floor_divide fmax fmin fmod full_like greater greater_equal
hsplit hstack hypot imag inner invert isclose iscomplex iscomplexobj isfinite isinf isnan isreal
isrealobj kron left_shift less less_equal linspace log log10 log1p log2 logaddexp logaddexp2
logical_and logical_not logical_or logical_xor logspace matmul max maximum mean median min minimum mod
moveaxis multiply nan_to_num nanmax nanmean nanmin nanstd nansum nanvar negative not_equal ones_like
outer pad percentile positive power prod put_along_axis quantile rad2deg real reciprocal remainder
repeat reshape result_type right_shift rint roll rollaxis rot90 round searchsorted sign signbit sin
sinh sort split sqrt square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh
tensordot tile trace transpose trapezoid tri tril triu true_divide trunc var vdot vsplit vstack
zeros_like full arange ones zeros identity meshgrid indices
""".split()

#: Functions with a host round trip inside CuPy (they synchronise).
SYNCING = {"unique": "cupy.unique", "nonzero": "cupy.nonzero", "argwhere": "cupy.argwhere",
           "flatnonzero": "cupy.flatnonzero", "array_split": "cupy.array_split"}

#: Creators that take the prototype from a host array too (CuPy reads only its shape/dtype).
LIKE = ("zeros_like", "ones_like", "full_like")


#: Functions whose array arguments CuPy types as device arrays: a host scalar or a 0-d host array
#: there raises (``cupy.stack([labels.min(), labels.max()])`` of a numpy ``labels`` did, on a GPU).
DEVICE_ONLY = {"expand_dims": "a", "stack": "arrays", "concatenate": "arrays"}


def _device_only(name, args, kwargs):
    what = args[0] if args else kwargs.get(DEVICE_ONLY[name])
    for a in (what if name != "expand_dims" else [what]):
        if type(a) is not ndarray:
            raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                            f"got {type(a).__name__}) in cupy.{name}")


def _delegate(name, sync=None, host_ok=False):
    fn = getattr(np, name)

    def f(*args, **kwargs):
        if sync:
            device.host_sync(sync)
        if name in DEVICE_ONLY:
            _device_only(name, args, kwargs)
        return call(fn, args, kwargs, host_ok=host_ok)

    f.__name__ = f.__qualname__ = name
    f.__module__ = "cupy"
    f.__doc__ = f"Emulated ``cupy.{name}`` (numpy's on the device buffers)."
    return f


def namespace():
    """{name: function} of the delegated functions."""
    out = {n: _delegate(n, host_ok=n in LIKE) for n in DELEGATED if hasattr(np, n)}
    out.update({n: _delegate(n, sync=why) for n, why in SYNCING.items()})
    return out


def empty(shape, dtype=float, order="C"):
    return wrap(poison(np.empty(shape, dtype=dtype, order=order)))


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    proto = prototype._a if type(prototype) is ndarray else np.asarray(prototype)
    return wrap(poison(np.empty_like(proto, dtype=dtype, order=order, shape=shape)))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device copy of ``obj`` (host data is copied to the device; never aliased)."""
    if type(obj) is ndarray:
        return wrap(np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin),
                    {id(obj._a): obj})
    host = np.array(unwrap(obj, host_ok=True), dtype=dtype, order=order,
                    ndmin=ndmin, copy=True)
    return wrap(host)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if type(a) is ndarray:
        if copy:
            return wrap(np.array(a._a, dtype=dtype, order=order or "K", copy=True))
        out = np.asarray(a._a, dtype=dtype, order=order)
        if copy is False and out is not a._a:
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        return wrap(out, {id(a._a): a})
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    return array(a, dtype=dtype, order=order or "K")


asanyarray = asarray


def ascontiguousarray(a, dtype=None):
    """CuPy's takes device arrays only (a Cython-typed argument) and returns at least 1-d."""
    if type(a) is not ndarray:
        raise TypeError("Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__})")
    return wrap(np.ascontiguousarray(a._a, dtype=dtype), {id(a._a): a})


def asfortranarray(a, dtype=None):
    if type(a) is not ndarray:
        raise TypeError("Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, "
                        f"got {type(a).__name__})")
    return wrap(np.asfortranarray(a._a, dtype=dtype), {id(a._a): a})


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """Device array -> host copy (a synchronisation); anything else -> ``numpy.asarray``."""
    if type(a) is ndarray:
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return np.asarray(a, order=order)


def get_array_module(*args):
    import cupy
    return cupy if any(type(a) is ndarray for a in args) else np


def copyto(dst, src, casting="same_kind", where=True):
    if type(dst) is not ndarray:
        raise TypeError("Argument 'dst' has incorrect type (expected cupy.ndarray)")
    if isinstance(src, np.ndarray) and src.size != 1:
        raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
    keep = {}
    np.copyto(dst._a, unwrap(src, keep, host_ok=True), casting=casting, where=unwrap(where, keep))


def bincount(x, weights=None, minlength=None):
    device.host_sync("cupy.bincount (the size of its output)")
    return call(np.bincount, (x,), {"weights": weights, "minlength": minlength or 0})


def where(condition, x=None, y=None):
    if x is None and y is None:
        device.host_sync("cupy.where(condition)")
        return call(np.where, (condition,), {})
    return call(np.where, (condition, x, y), {})


def copy(a, order="K"):
    return a.copy(order=order)


def ravel(a, order="C"):
    return a.ravel(order)


def size(a, axis=None):
    return a.size if axis is None else a.shape[axis]


def shape(a):
    return a.shape


def ndim(a):
    return a.ndim
