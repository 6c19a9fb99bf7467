"""``cupy.ndarray`` of the emulator: device memory is a numpy array that only the "device" touches.

The class is *not* a numpy subclass, so the host cannot read device memory by
accident: ``numpy.asarray(a)`` raises CuPy's ``TypeError`` ("Implicit conversion
to a NumPy array is not allowed"), mixing a host array into device arithmetic
raises ``TypeError: Unsupported type <class 'numpy.ndarray'>`` as CuPy does, and
numpy functions and ufuncs called on device arrays dispatch to the emulated
``cupy`` namespace (``__array_function__`` / ``__array_ufunc__``), like CuPy's.
Reductions and integer indexing return 0-d device arrays, not host scalars.

Operations that read device memory on the host are *host synchronisations*
(:mod:`.device`): ``get()``, ``item()``, ``float(a)``, ``bool(a)``, ``repr(a)``,
boolean-mask indexing, ...  ``empty`` arrays are filled with NaN (floats) or 0xA5
bytes (integers), as stale device memory would be, so a kernel that leaves an
element unwritten is seen.
"""
from __future__ import annotations

import operator

import numpy as np

from . import device

IMPLICIT_MESSAGE = ("Implicit conversion to a NumPy array is not allowed. "
                    "Please use `.get()` to construct a NumPy array explicitly.")


def unsupported(x):
    """CuPy's error for an argument it cannot put on the device (e.g. a numpy array)."""
    return TypeError(f"Unsupported type {type(x)}")


def poison(a):
    """Fill a new buffer like stale device memory: NaN for inexact dtypes, 0xA5 bytes otherwise."""
    if a.dtype.kind in "fc":
        a.fill(np.nan)
    elif a.dtype.kind == "b":
        a.fill(True)
    elif a.size:
        a.reshape(-1).view(np.uint8).fill(0xA5)   # reshape: a 0-d array cannot change its itemsize
    return a


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def wrap(x, keep=None):
    """numpy results -> device arrays (scalars -> 0-d arrays); ``keep`` maps id(buffer) -> the
    device array that already wraps it (so ``a.astype(a.dtype, copy=False) is a``)."""
    if isinstance(x, np.ndarray):
        if keep and id(x) in keep:
            return keep[id(x)]
        device.track(_root(x))
        out = object.__new__(ndarray)
        out._a = x
        return out
    if isinstance(x, np.generic):
        return wrap(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(wrap(v, keep) for v in x)
    if isinstance(x, list):
        return [wrap(v, keep) for v in x]
    return x


def unwrap(x, keep=None, host_ok=False):
    """Device arrays -> their buffers (recorded in ``keep``); a host array raises like CuPy."""
    if type(x) is ndarray:
        if keep is not None:
            keep[id(x._a)] = x
        return x._a
    if isinstance(x, np.ndarray):
        if host_ok or x.ndim == 0:
            return x
        raise unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v, keep, host_ok) for v in x)
    return x


def call(fn, args, kwargs, keep=None, host_ok=False):
    """``fn`` on unwrapped arguments, its result wrapped."""
    keep = {} if keep is None else keep
    a = unwrap(args, keep, host_ok)
    k = {key: unwrap(v, keep, host_ok) for key, v in kwargs.items()}
    return wrap(fn(*a, **k), keep)


def _operand(x):
    if type(x) is ndarray:
        return x._a
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x
        raise unsupported(x)
    if isinstance(x, (bool, int, float, complex, np.generic)):
        return x
    if isinstance(x, (list, tuple)):
        raise unsupported(x)
    return NotImplemented


def _binary(op, reflected=False):
    def method(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        return wrap(op(o, self._a) if reflected else op(self._a, o))
    return method


def _inplace(name):
    def method(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        getattr(self._a, name)(o)
        return self
    return method


def _delegated(name, sync=False):
    def method(self, *args, **kwargs):
        if sync:
            device.host_sync(f"ndarray.{name}()")
        return call(getattr(self._a, name), args, kwargs, {id(self._a): self})
    method.__name__ = name
    return method


def _index(key):
    """An index for a device array: device index arrays unwrapped; numpy/list ones accepted
    (CuPy copies them to the device); a boolean mask needs the host (a synchronisation)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for s in parts:
        if type(s) is ndarray:
            s = s._a
        if isinstance(s, (np.ndarray, list)) and np.asarray(s).dtype == np.bool_:
            device.host_sync("boolean-mask indexing")
        out.append(s)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _basic(key):
    parts = key if isinstance(key, tuple) else (key,)
    return all(s is None or s is Ellipsis or isinstance(s, (slice, int, np.integer)) for s in parts)


class _Flags:
    def __init__(self, a):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = a.base is None

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


class MemoryPointer:
    """``ndarray.data``: the device address (``ptr``) of the first element."""

    def __init__(self, ptr):
        self.ptr = ptr

    def __int__(self):
        return self.ptr


class ndarray:
    """An emulated device array (see the module docstring)."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100.0
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy emulator does not take memptr= or strides=")
        a = poison(np.empty(shape, dtype=dtype, order=order))
        device.track(a)
        self._a = a

    # -- what describes it ---------------------------------------------------------------
    shape = property(lambda self: self._a.shape)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: wrap(self._a.T))
    mT = property(lambda self: wrap(np.swapaxes(self._a, -1, -2)))
    real = property(lambda self: wrap(self._a.real, {id(self._a): self}))
    imag = property(lambda self: wrap(self._a.imag))
    data = property(lambda self: MemoryPointer(self._a.ctypes.data))

    @property
    def device(self):
        from ..cuda import Device
        return Device(0)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3,
                "data": (self._a.ctypes.data, False),
                "strides": None if self._a.flags.c_contiguous else self._a.strides}

    # -- host <-> device -----------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_MESSAGE)

    def get(self, stream=None, order="C", out=None, blocking=True):
        device.host_sync("ndarray.get()")
        if out is not None:
            if not isinstance(out, np.ndarray) or out.shape != self.shape or out.dtype != self.dtype:
                raise ValueError("out must be a numpy array of the same shape and dtype")
            out[...] = self._a
            return out
        return np.array(self._a, order=order if order in ("C", "F") else "K", copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray: {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch")
        self._a[...] = arr

    def item(self, *args):
        device.host_sync("ndarray.item()")
        return self._a.item(*args)

    def tolist(self):
        device.host_sync("ndarray.tolist()")
        return self._a.tolist()

    def _scalar(self, kind):
        device.host_sync(f"{kind}(ndarray)")
        if self._a.size != 1:
            if kind == "bool":
                return bool(self._a)         # numpy's "truth value ... is ambiguous"
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        return self._a.reshape(()).item()

    def __float__(self):
        return float(self._scalar("float"))

    def __int__(self):
        return int(self._scalar("int"))

    def __complex__(self):
        return complex(self._scalar("complex"))

    def __bool__(self):
        return bool(self._scalar("bool"))

    def __index__(self):
        if self._a.ndim != 0 or self._a.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return operator.index(self._scalar("index"))

    def __repr__(self):
        device.host_sync("repr(ndarray)")
        return repr(self._a)

    def __str__(self):
        device.host_sync("str(ndarray)")
        return str(self._a)

    def __format__(self, spec):
        device.host_sync("format(ndarray)")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __reduce__(self):
        device.host_sync("pickle(ndarray)")
        return (_rebuild, (np.array(self._a),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- dispatch of numpy functions and ufuncs (as CuPy's) ---------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method not in ("__call__", "reduce", "accumulate", "outer", "at"):
            return NotImplemented
        keep = {}
        args = unwrap(inputs, keep)
        kw = {}
        for key, v in kwargs.items():
            if key == "out":
                v = tuple(v) if isinstance(v, tuple) else (v,)
                for o in v:
                    if o is not None and type(o) is not ndarray:
                        raise TypeError("Output arguments type must be cupy.ndarray")
            kw[key] = unwrap(v, keep)
        result = getattr(ufunc, method)(*args, **kw)
        return None if method == "at" else wrap(result, keep)

    def __array_function__(self, func, types, args, kwargs):
        import cupy
        target = cupy
        for sub in func.__module__.split(".")[1:]:
            if sub.startswith("_"):
                continue
            target = getattr(target, sub, None)
            if target is None:
                return NotImplemented
        impl = getattr(target, func.__name__, None)
        if impl is None or not callable(impl):
            return NotImplemented
        return impl(*args, **kwargs)

    # -- conversions and copies ----------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        with np.errstate(invalid="ignore"):      # a GPU casts NaN to an integer without a word
            out = self._a.astype(dtype, order=order, casting=casting or "unsafe", copy=copy)
        return wrap(out, {id(self._a): self})

    def copy(self, order="C"):
        return wrap(self._a.copy(order=order))

    def fill(self, value):
        if type(value) is ndarray:
            if value.ndim != 0:
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a
        elif isinstance(value, np.ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        k = _index(key)
        res = self._a[k]
        if isinstance(res, np.generic):       # CuPy returns a 0-d view
            res = self._a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
        return wrap(res, {id(self._a): self})

    def __setitem__(self, key, value):
        k = _index(key)
        if type(value) is ndarray:
            value = value._a
        elif isinstance(value, np.ndarray) and value.ndim > 0 and _basic(key):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a[k] = value

    # -- arithmetic ----------------------------------------------------------------------
    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv), _binary(operator.floordiv, True)
    __mod__, __rmod__ = _binary(operator.mod), _binary(operator.mod, True)
    __pow__, __rpow__ = _binary(operator.pow), _binary(operator.pow, True)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _binary(operator.matmul, True)
    __and__, __rand__ = _binary(operator.and_), _binary(operator.and_, True)
    __or__, __ror__ = _binary(operator.or_), _binary(operator.or_, True)
    __xor__, __rxor__ = _binary(operator.xor), _binary(operator.xor, True)
    __lshift__, __rshift__ = _binary(operator.lshift), _binary(operator.rshift)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)
    __iadd__, __isub__, __imul__ = _inplace("__iadd__"), _inplace("__isub__"), _inplace("__imul__")
    __itruediv__, __ifloordiv__ = _inplace("__itruediv__"), _inplace("__ifloordiv__")
    __imod__, __ipow__, __imatmul__ = _inplace("__imod__"), _inplace("__ipow__"), _inplace("__imatmul__")
    __iand__, __ior__, __ixor__ = _inplace("__iand__"), _inplace("__ior__"), _inplace("__ixor__")

    def __neg__(self):
        return wrap(-self._a)

    def __pos__(self):
        return wrap(+self._a)

    def __abs__(self):
        return wrap(abs(self._a))

    def __invert__(self):
        return wrap(~self._a)


for _name in ("all", "any", "argmax", "argmin", "argsort", "clip", "conj", "conjugate", "cumprod",
              "cumsum", "diagonal", "dot", "flatten", "max", "mean", "min", "prod", "ptp", "ravel",
              "repeat", "reshape", "round", "squeeze", "std", "sum", "swapaxes", "take", "trace",
              "transpose", "var", "view", "sort", "partition", "argpartition", "put", "choose"):
    setattr(ndarray, _name, _delegated(_name))
for _name in ("nonzero", "compress"):
    setattr(ndarray, _name, _delegated(_name, sync=True))
ndarray.__module__ = "cupy"


def _rebuild(host):
    return wrap(np.array(host))
