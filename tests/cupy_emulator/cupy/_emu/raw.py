"""``cupy.RawModule`` / ``cupy.RawKernel`` of the emulator: CUDA C++ compiled by g++, run on fibers.

The source is compiled as it is, after the emulation header (``cuda_emu.h``); only
``extern __shared__ T name[];`` is rewritten into a pointer to the block's dynamic
shared memory.  For every kernel that CuPy could look up -- each name expression
(``"row_centre<float>"``) and each ``extern "C"`` kernel -- a launcher and a
description of its parameter types are generated.

A launch is checked as a GPU would (and stricter where a GPU would silently compute
garbage):

* ``grid`` and ``block`` must be tuples (CuPy's ``Function.__call__`` is Cython-typed);
  missing dimensions are 1 and zeros become 1, as in CuPy;
* a block of more than 1024 threads (x, y <= 1024, z <= 64), a grid y/z over 65535, or
  more than 48 KiB of dynamic shared memory (unless ``max_dynamic_shared_size_bytes``
  was raised) fails as ``CUDA_ERROR_INVALID_VALUE``;
* the arguments must match the kernel's parameters in number, and each one in kind:
  a device array for a pointer (of the same element type, C-contiguous, because CuPy
  passes only its data pointer), and for a value a scalar of exactly the parameter's
  type.  CuPy passes a Python ``int`` as int64 and a ``float`` as float64, and the GPU
  reads as many bytes as the parameter has: a Python ``int`` for an ``int`` parameter,
  or a ``float32`` for a ``double``, is a ``TypeError`` here.

Out-of-bounds accesses through pointers: each array argument is copied into a staging
buffer between two 16 KiB guard zones (signalling NaNs for floats, 0xA5 bytes for
integers), and copied back after the launch.  A write outside the array changes a guard and fails
the launch (``KernelFault``); a read outside it reads NaN / -1 into the results.  Arrays
that overlap one another (e.g. the same array passed twice) are passed unstaged when
either is written.
"""
from __future__ import annotations

import ctypes
import re

import numpy as np

from . import build, device
from .array import ndarray

MAX_SHARED_DEFAULT = 48 * 1024
GUARD = 16 * 1024
MAX_SHARED_OPTIN = 227 * 1024
_NUMPY_SCALARS = {np.dtype(c).type for c in "?bhilqBHILQefdFD"}
# (the qualifier is spelled in pieces: tests/test_cuda_sources.py compiles every string of tests/ that has it)
_GLOBAL = "__" + "global" + "__"
_EXTERN_C = re.compile(r'extern\s+"C"\s+' + _GLOBAL + r'\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)\s*\(')
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+([^;\[\]{}]*?)\b(\w+)\s*\[\s*\]\s*;")
_ALIGN = re.compile(r"\b(?:__align__|alignas)\s*\((?:[^()]|\([^()]*\))*\)")


class KernelFault(RuntimeError):
    """The emulated kernel did something that has no defined result on a GPU (the message says what)."""


class LaunchConfig(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_bytes", ctypes.c_ulonglong),
                ("schedule", ctypes.c_longlong), ("clock", ctypes.c_longlong)]


def rewrite_extern_shared(code):
    """``extern __shared__ T name[];`` -> a pointer into the block's dynamic shared memory."""
    def repl(m):
        ctype = _ALIGN.sub("", m.group(1)).strip()
        name = m.group(2)
        depth = m.string[:m.start()].count("{") - m.string[:m.start()].count("}")
        target = f"reinterpret_cast<{ctype} *>(::emu::dynamic_shared())"
        return f"{ctype} *{name} = {target};" if depth > 0 else f"\n#define {name} ({target})\n"
    return _EXTERN_SHARED.sub(repl, code)


def extern_c_kernels(code):
    return _EXTERN_C.findall(code)


def _parse_signature(text):
    out = []
    for item in filter(None, text.split(",")):
        kind, tname, extra = item.split(":")
        out.append((kind, tname, int(extra)))
    return out


class _Program:
    """One compiled module: ``{lookup name: (launcher, parameter list)}``."""

    def __init__(self, code, names, what):
        self.code = code
        body = rewrite_extern_shared(code)
        stubs = []
        for k, expr in enumerate(names):
            stubs.append(f"EMU_EXPORT const char* emu_sig_{k}() {{ return ::emu::signature(&{expr}); }}\n"
                         f"EMU_EXPORT int emu_launch_{k}(const ::emu::LaunchConfig* c, void** a, char* e, int n, "
                         f"long long* clk) {{ return ::emu::launch(&{expr}, c, a, e, n, clk); }}\n")
        source = f'{build.preamble()}#line 1 "{what}.cu"\n{body}\n// launchers\n{"".join(stubs)}'
        lib = build.build(source, what)
        self.kernels = {}
        for k, expr in enumerate(names):
            sig = getattr(lib, f"emu_sig_{k}")
            sig.restype = ctypes.c_char_p
            launch = getattr(lib, f"emu_launch_{k}")
            launch.argtypes = [ctypes.POINTER(LaunchConfig), ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                               ctypes.c_int, ctypes.POINTER(ctypes.c_longlong)]
            launch.restype = ctypes.c_int
            self.kernels[expr] = (launch, _parse_signature(sig().decode()))


def _driver_error(msg):
    from ..cuda.driver import CUDADriverError
    return CUDADriverError(msg)


class Function:
    """A kernel of a module (``RawModule.get_function`` / ``RawKernel``), launched as CuPy's Function."""

    def __init__(self, name, launcher, signature, owner=None):
        self.name, self._launch, self._params, self._owner = name, launcher, signature, owner

    @property
    def max_dynamic_shared_size_bytes(self):
        return getattr(self._owner, "max_dynamic_shared_size_bytes", MAX_SHARED_DEFAULT)

    def __call__(self, grid, block, args, shared_mem=0, stream=None, enable_cooperative_groups=False):
        if not isinstance(grid, tuple):
            raise TypeError(f"Argument 'grid' has incorrect type (expected tuple, got {type(grid).__name__})")
        if not isinstance(block, tuple):
            raise TypeError(f"Argument 'block' has incorrect type (expected tuple, got {type(block).__name__})")
        if shared_mem < 0:
            raise OverflowError("can't convert negative value to size_t")
        g = [max(1, int(v)) for v in (grid + (1, 1))[:3]]
        b = [max(1, int(v)) for v in (block + (1, 1))[:3]]
        if (b[0] > 1024 or b[1] > 1024 or b[2] > 64 or b[0] * b[1] * b[2] > 1024
                or g[0] > 2 ** 31 - 1 or g[1] > 65535 or g[2] > 65535
                or shared_mem > max(MAX_SHARED_DEFAULT, self.max_dynamic_shared_size_bytes)):
            raise _driver_error(f"CUDA_ERROR_INVALID_VALUE: invalid argument (kernel {self.name!r}, "
                                f"grid {tuple(g)}, block {tuple(b)}, shared_mem {shared_mem})")
        argv, alive, staged = self._arguments(args)
        cfg = LaunchConfig()
        cfg.grid[:] = g
        cfg.block[:] = b
        cfg.shared_bytes = shared_mem
        cfg.schedule = _schedule()
        cfg.clock = device.clock()
        clock = ctypes.c_longlong(0)
        err = ctypes.create_string_buffer(1024)
        status = self._launch(ctypes.byref(cfg), argv, err, len(err), ctypes.byref(clock))
        device.kernel_ran(clock.value)
        where = f"kernel {self.name!r} (grid {tuple(g)}, block {tuple(b)})"
        if status != 0:
            raise KernelFault(f"{where}: {err.value.decode()}")
        self._unstage(staged, where)
        del alive

    @staticmethod
    def _stage(a):
        """A copy of ``a`` between two guard zones: (whole buffer, the copy's bytes)."""
        guard = _guard(a.dtype)
        raw = np.empty(a.nbytes + 2 * GUARD, dtype=np.uint8)
        raw[:GUARD] = guard
        raw[GUARD + a.nbytes:] = guard
        body = raw[GUARD:GUARD + a.nbytes]
        body[...] = a.reshape(-1).view(np.uint8)
        return raw, body

    @staticmethod
    def _unstage(staged, where):
        for k, x, raw, body, writable in staged:
            guard = _guard(x.dtype)
            before, after = raw[:GUARD] != guard, raw[GUARD + body.size:] != guard
            if before.any() or after.any():
                lo = GUARD - int(np.flatnonzero(before)[0]) if before.any() else 0
                hi = int(np.flatnonzero(after)[-1]) + 1 if after.any() else 0
                raise KernelFault(f"{where}: out-of-bounds write through argument {k} (a {x.dtype} array "
                                  f"of shape {x.shape}): its guard zones changed up to {lo} bytes before its "
                                  f"start and up to {hi} bytes past its end")
            if writable:
                x._a.reshape(-1).view(np.uint8)[...] = body

    def _arguments(self, args):
        args = tuple(args)
        if len(args) != len(self._params):
            raise TypeError(f"kernel {self.name!r} takes {len(self._params)} arguments, {len(args)} given "
                            "(a GPU would read the missing ones from garbage)")
        argv = (ctypes.c_void_p * max(1, len(args)))()
        alive, staged = [], []
        unstaged = self._overlapping(args)
        for k, (x, (kind, tname, extra)) in enumerate(zip(args, self._params)):
            where = f"kernel {self.name!r} argument {k}"
            if x is None or type(x) is ndarray:
                if kind != "ptr":
                    raise TypeError(f"{where}: a {'None' if x is None else 'cupy.ndarray'} for a {tname} value "
                                    "parameter")
                if x is None:
                    cell = ctypes.c_void_p(0)
                else:
                    if tname not in ("void", "other") and x.dtype != np.dtype(tname):
                        raise TypeError(f"{where}: a {x.dtype} array for a {tname} pointer")
                    if not x.flags.c_contiguous:
                        raise ValueError(f"{where}: a non-C-contiguous array (strides {x.strides}); CuPy passes "
                                         "only its data pointer, so the kernel would read the wrong elements")
                    if k in unstaged or x.size == 0:
                        cell = ctypes.c_void_p(x._a.ctypes.data)
                    else:
                        raw, body = self._stage(x._a)
                        staged.append((k, x, raw, body, not extra))
                        cell = ctypes.c_void_p(body.ctypes.data)
                    alive.append(x._a)
                alive.append(cell)
                argv[k] = ctypes.addressof(cell)
                continue
            if isinstance(x, np.ndarray) or (type(x) not in _NUMPY_SCALARS and not isinstance(x, (int, float))):
                raise TypeError(f"Unsupported type {type(x)}")
            v = x if type(x) in _NUMPY_SCALARS else (np.int64(x) if isinstance(x, int) else np.float64(x))
            if kind == "ptr":
                raise TypeError(f"{where}: a {v.dtype} scalar for a {tname} pointer parameter")
            if v.dtype.itemsize != extra or (tname != "other" and v.dtype != np.dtype(tname)):
                raise TypeError(f"{where}: {type(x).__name__} {x!r} is passed as {v.dtype} ({v.dtype.itemsize} "
                                f"bytes) but the parameter is {tname} ({extra} bytes); pass numpy.{tname}(...)")
            cell = np.array(v)
            alive.append(cell)
            argv[k] = cell.ctypes.data
        return argv, alive, staged

    def _overlapping(self, args):
        """Indices of array arguments that overlap another one of which either is written."""
        spans = []
        for k, (x, (kind, _, const)) in enumerate(zip(args, self._params)):
            if type(x) is ndarray and kind == "ptr" and x.size:
                start = x._a.ctypes.data
                spans.append((k, start, start + x.nbytes, not const))
        out = set()
        for i, (k1, s1, e1, w1) in enumerate(spans):
            for k2, s2, e2, w2 in spans[i + 1:]:
                if s1 < e2 and s2 < e1 and (w1 or w2):
                    out.update((k1, k2))
        return out


def _guard(dtype):
    """GUARD bytes of the guard zone of a ``dtype`` array: signalling NaNs for floats (a read is NaN,
    and arithmetic on one quiets it, so even ``x[n] += v`` past the end changes the guard), else 0xA5."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or dtype == np.complex64:
        return np.full(GUARD // 4, 0x7FA5A5A5, dtype=np.uint32).view(np.uint8)
    if dtype == np.float64 or dtype == np.complex128:
        return np.full(GUARD // 8, 0x7FF5A5A5A5A5A5A5, dtype=np.uint64).view(np.uint8)
    return np.full(GUARD, 0xA5, dtype=np.uint8)


SCHEDULES = ("forward", "reverse", "shuffle")


def _schedule():
    """THREEFACTOR_CUPY_EMULATOR_SCHEDULE: the order in which a block's waiting threads run."""
    import os
    name = os.environ.get("THREEFACTOR_CUPY_EMULATOR_SCHEDULE", "forward")
    if name not in SCHEDULES:
        raise ValueError(f"THREEFACTOR_CUPY_EMULATOR_SCHEDULE={name!r} is not one of {', '.join(SCHEDULES)}")
    return SCHEDULES.index(name)


class RawModule:
    """Emulated ``cupy.RawModule(code=..., name_expressions=[...])`` (compiled on first use)."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if (code is None) == (path is None):
            raise TypeError("One of `code` and `path` should be given.")
        if path is not None:
            with open(path, encoding="utf-8") as f:
                code = f.read()
        self.code, self.options = code, options
        self.name_expressions = tuple(name_expressions or ())
        self._program = None

    def _compiled(self):
        if self._program is None:
            names = list(self.name_expressions)
            names += [n for n in extern_c_kernels(self.code) if n not in names]
            self._program = _Program(self.code, names, "RawModule")
        return self._program

    def compile(self, log_stream=None):
        self._compiled()

    def get_function(self, name):
        program = self._compiled()
        if name not in program.kernels:
            raise _driver_error(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} is neither a name "
                                "expression of this RawModule nor an extern \"C\" kernel in it)")
        launcher, sig = program.kernels[name]
        return Function(name, launcher, sig, self)


class RawKernel:
    """Emulated ``cupy.RawKernel(code, name)``: an ``extern "C"`` kernel, compiled on first launch."""

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False):
        self.code, self.name, self.options = code, name, options
        self.max_dynamic_shared_size_bytes = MAX_SHARED_DEFAULT
        self._function = None

    @property
    def kernel(self):
        if self._function is None:
            if self.name not in extern_c_kernels(self.code):
                raise _driver_error(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({self.name!r} is not an "
                                    "extern \"C\" kernel of this code)")
            program = _Program(self.code, [self.name], self.name)
            launcher, sig = program.kernels[self.name]
            self._function = Function(self.name, launcher, sig, self)
        return self._function

    @property
    def attributes(self):
        return {"max_threads_per_block": 1024, "max_dynamic_shared_size_bytes": self.max_dynamic_shared_size_bytes,
                "num_regs": 32, "shared_size_bytes": 0}

    def compile(self, log_stream=None):
        self.kernel

    def __call__(self, grid, block, args, **kwargs):
        self.kernel(grid, block, args, **kwargs)
