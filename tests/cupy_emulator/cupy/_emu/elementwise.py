"""``cupy.ElementwiseKernel`` of the emulator: CuPy's argument semantics, the loop body in g++.

What CuPy does on a call (``cupy/_core/_kernel.pyx``), and so does this:

* ``len(args)`` is ``nin`` (outputs are allocated) or ``nin + nout``; else ``TypeError``.
* A device array is an array argument; a Python or numpy scalar is a scalar argument;
  anything else (a numpy array too) is ``TypeError: Unsupported type``.
* Type placeholders (one-letter types such as ``T``) are set by the *array* arguments
  (outputs first); arrays of one placeholder must agree, and an array for a fixed
  type (``int32 n``) must have exactly that dtype (``TypeError: Type is mismatched``).
  A placeholder no array sets is an error; scalars never set one.
* Scalars are converted to their parameter's type (numpy assignment rules).
* Non-``raw`` arrays (inputs and given outputs) are broadcast together; that shape is
  the loop; a given output must have it exactly.  ``size=`` sets the loop when every
  array is ``raw`` (and is refused otherwise).  An empty loop launches nothing.
* In the body, a non-raw input is ``const T &x`` bound to element ``i`` of the loop, an
  output ``T &z``, a scalar ``const T x``, a ``raw`` array ``x[k]`` indexed by its own
  C-order index (bounds-checked here) with ``x.size()``; ``i`` and ``_ind.size()``.

The loop runs in order of ``i``, or reversed / shuffled with
``THREEFACTOR_CUPY_EMULATOR_SCHEDULE=reverse|shuffle`` (iterations are parallel on a GPU).
"""
from __future__ import annotations

import ctypes
import re

import numpy as np

from . import build
from .array import ndarray, poison, unsupported, wrap

CTYPE = {np.dtype(np.bool_): "bool", np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char",
         np.dtype(np.int16): "short", np.dtype(np.uint16): "unsigned short", np.dtype(np.int32): "int",
         np.dtype(np.uint32): "unsigned int", np.dtype(np.int64): "long long",
         np.dtype(np.uint64): "unsigned long long", np.dtype(np.float32): "float",
         np.dtype(np.float64): "double"}
MAX_NDIM = 32


class ArrayDesc(ctypes.Structure):
    """``emu::ArrayDesc``: an array's address, shape and strides (bytes)."""
    _fields_ = [("data", ctypes.c_void_p), ("ndim", ctypes.c_longlong), ("size", ctypes.c_longlong),
                ("contiguous", ctypes.c_longlong), ("shape", ctypes.c_longlong * MAX_NDIM),
                ("strides", ctypes.c_longlong * MAX_NDIM)]


def describe(a):
    """An :class:`ArrayDesc` of numpy array ``a``."""
    if a.ndim > MAX_NDIM:
        raise ValueError(f"the emulator handles arrays of up to {MAX_NDIM} dimensions")
    d = ArrayDesc()
    d.data = a.ctypes.data
    d.ndim, d.size = a.ndim, a.size
    d.contiguous = int(a.flags.c_contiguous)
    for k in range(a.ndim):
        d.shape[k], d.strides[k] = a.shape[k], a.strides[k]
    return d


def ctype_of(dtype):
    dtype = np.dtype(dtype)
    if dtype not in CTYPE:
        raise TypeError(f"the CuPy emulator does not support dtype {dtype} in kernels")
    return CTYPE[dtype]


class Param:
    """One CuPy parameter, e.g. ``raw T x`` or ``int32 n`` (as ``cupy._core._kernel.ParameterInfo``)."""

    def __init__(self, text, is_const):
        words = text.split()
        if len(words) < 2:
            raise Exception(f"Syntax error: {text}")
        t, self.name = words[-2:]
        self.raw, self.is_const = False, is_const
        for w in words[:-2]:
            if w == "raw":
                self.raw = True
            elif w == "_non_const":
                self.is_const = False
            else:
                raise Exception(f'Unknown keyword "{w}"')
        if len(t) == 1:
            self.ctype, self.dtype = t, None
        else:
            self.dtype = np.dtype(t)
            self.ctype = ctype_of(self.dtype)


def params(text, is_const):
    return tuple(Param(p, is_const) for p in text.strip().split(",")) if text.strip() else ()


def _scalar(value, dtype):
    """A Python/numpy scalar as a 0-d numpy array of ``dtype`` (CuPy packs with assignment rules)."""
    out = np.empty((), dtype=dtype)
    out[()] = value
    return out


_rng = np.random.default_rng(0)


def _order(n):
    """The order of the loop's iterations (None: 0, 1, ...), after THREEFACTOR_CUPY_EMULATOR_SCHEDULE:
    on a GPU they run in parallel, so a kernel must not depend on it."""
    from .raw import _schedule
    schedule = _schedule()
    if schedule == 0:
        return None
    return np.arange(n - 1, -1, -1, dtype=np.int64) if schedule == 1 else _rng.permutation(n).astype(np.int64)


class ElementwiseKernel:
    """Emulated ``cupy.ElementwiseKernel(in_params, out_params, operation, name, ...)``."""

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True, preamble="",
                 no_return=False, return_tuple=False, **kwargs):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.in_params = params(in_params, True)
        self.out_params = params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation, self.name, self.preamble = operation, name, preamble
        self.no_return, self.return_tuple = no_return, return_tuple
        unknown = set(kwargs) - {"options", "loop_prep", "after_loop"}
        if unknown:
            raise NotImplementedError(f"the CuPy emulator's ElementwiseKernel does not take {sorted(unknown)}")
        self.loop_prep, self.after_loop = kwargs.get("loop_prep", ""), kwargs.get("after_loop", "")
        self.__name__ = name
        self._libs = {}

    def __call__(self, *args, size=-1, stream=None, block_size=128):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} "
                            f"or {self.nargs} (with outputs), but given {len(args)}.")
        for a in args:
            if type(a) is not ndarray and not isinstance(a, (bool, int, float, complex, np.generic)):
                raise unsupported(a)
        if block_size <= 0:
            raise ValueError("block_size must be greater than zero")
        allp = self.in_params + self.out_params
        ins, outs = list(args[:self.nin]), list(args[self.nin:])
        nonraw = [a._a for a, p in zip(args, allp) if type(a) is ndarray and not p.raw]
        if size != -1 and nonraw:
            raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
        if size == -1 and not nonraw:
            raise ValueError("Loop size is undecided.")
        try:
            shape = np.broadcast_shapes(*(a.shape for a in nonraw)) if nonraw else (size,)
        except ValueError:
            raise ValueError("operands could not be broadcast together with shapes "
                             + " ".join(str(a.shape).replace(" ", "") for a in nonraw)) from None
        in_types, out_types, type_map = self._types(ins, outs)
        if outs:
            for a, p in zip(outs, self.out_params):
                if type(a) is not ndarray:
                    raise TypeError("Output arguments type must be cupy.ndarray")
                if not p.raw and a.shape != shape:
                    raise ValueError("Out shape is mismatched")
        else:
            if any(p.raw for p in self.out_params) and size == -1:
                raise ValueError("Output array size is Undecided")
            outs = [wrap(poison(np.empty(shape, dtype=t))) for t in out_types]
        ret = None if self.no_return else (outs[0] if self.nout == 1 and not self.return_tuple else tuple(outs))
        if 0 in shape:
            return ret
        self._launch(ins + outs, in_types + out_types, type_map, shape)
        return ret

    def _types(self, ins, outs):
        """(in dtypes, out dtypes, sorted ((placeholder, dtype), ...)) as CuPy decides them."""
        found = {}
        for a, p in zip(outs, self.out_params):
            if type(a) is not ndarray:
                raise TypeError("Output arguments must be cupy.ndarray")
            self._match(found, p, a.dtype)
        for a, p in zip(ins, self.in_params):
            if type(a) is ndarray:
                self._match(found, p, a.dtype)
        for p in self.in_params + self.out_params:
            if p.dtype is None and p.ctype not in found:
                raise TypeError(f"{self.name}: no array argument sets the type placeholder {p.ctype!r} "
                                f"(of {p.name!r}); CuPy fails here too (KeyError: {p.ctype!r})")
        in_types = tuple(p.dtype if p.dtype is not None else found[p.ctype] for p in self.in_params)
        out_types = tuple(p.dtype if p.dtype is not None else found[p.ctype] for p in self.out_params)
        return in_types, out_types, tuple(sorted(found.items()))

    @staticmethod
    def _match(found, p, dtype):
        if p.dtype is not None:
            if dtype != p.dtype:
                raise TypeError(f"Type is mismatched. {p.name} {dtype} {p.dtype}")
        elif p.ctype in found:
            if found[p.ctype] != dtype:
                raise TypeError(f"Type is mismatched. {p.name} {dtype} {found[p.ctype]} {p.ctype}")
        else:
            found[p.ctype] = dtype

    def _launch(self, values, types, type_map, shape):
        allp = self.in_params + self.out_params
        kinds = tuple("a" if type(v) is ndarray else "s" for v in values)
        key = (kinds, type_map)
        if key not in self._libs:
            self._libs[key] = self._compile(kinds, types, type_map)
        fn = self._libs[key]
        n = len(values)
        argv = (ctypes.c_void_p * max(n, 1))()
        descs = (ArrayDesc * max(n, 1))()
        alive = []
        for k, (v, p, t) in enumerate(zip(values, allp, types)):
            if type(v) is ndarray:
                a = v._a if p.raw else np.broadcast_to(v._a, shape) if k < self.nin else v._a
                descs[k] = describe(a)
                alive.append(a)
            else:
                s = _scalar(v, t)
                alive.append(s)
                argv[k] = s.ctypes.data
        err = ctypes.create_string_buffer(512)
        size = int(np.prod(shape, dtype=np.int64))
        order = _order(size)
        if fn(argv, descs, size, None if order is None else order.ctypes.data, err, len(err)) != 0:
            from ..cuda.runtime import CUDARuntimeError
            raise CUDARuntimeError(f"cudaErrorIllegalAddress: an illegal memory access was encountered "
                                   f"(emulator: ElementwiseKernel {self.name!r}: {err.value.decode()})")

    def _compile(self, kinds, types, type_map):
        allp = self.in_params + self.out_params
        decls, binds = [], []
        for k, (p, kind, t) in enumerate(zip(allp, kinds, types)):
            c = ctype_of(t)
            const = "const " if k < self.nin else ""
            if kind == "s":
                if k >= self.nin:
                    raise TypeError("Output arguments must be cupy.ndarray")
                decls.append(f"    const {c} {p.name} = *static_cast<const {c}*>(_argv[{k}]);")
            elif p.raw:
                decls.append(f'    {const}::emu::CArray<{c}> {p.name}{{_desc[{k}], "{p.name}"}};')
            else:
                decls.append(f"    const ::emu::Strided<{c}> _raw_{p.name}{{_desc[{k}]}};")
                binds.append(f"        {const}{p.ctype} &{p.name} = _raw_{p.name}[i];")
        typedefs = "".join(f"typedef {ctype_of(d)} {name};\n" for name, d in type_map)
        nl = "\n"
        source = f"""{build.preamble()}{typedefs}{self.preamble}
EMU_EXPORT int emu_elementwise(void** _argv, const ::emu::ArrayDesc* _desc, long long _n, const long long* _order,
                               char* _err, int _errlen) {{
{nl.join(decls)}
    ::emu::Indexer _ind{{_n}};
    ::emu::elementwise_errors = ::emu::Errors{{}};
    {self.loop_prep};
    for (ptrdiff_t _k = 0; _k < _n; ++_k) {{
        ptrdiff_t i = _order ? (ptrdiff_t)_order[_k] : _k;
        _ind.set(i);
{nl.join(binds)}
#line 1 "{self.name}.operation"
{self.operation};
    }}
    {self.after_loop};
    if (::emu::elementwise_errors.first_bad >= 0) {{
        snprintf(_err, (size_t)_errlen, "raw array '%s' of size %lld read at index %lld",
                 ::emu::elementwise_errors.name, ::emu::elementwise_errors.size,
                 ::emu::elementwise_errors.first_bad);
        return 1;
    }}
    return 0;
}}
"""
        lib = build.build(source, f"ElementwiseKernel {self.name!r}")
        fn = lib.emu_elementwise
        fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ArrayDesc), ctypes.c_longlong,
                       ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
