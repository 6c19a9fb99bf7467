"""Compile the CuPy backend's CUDA sources with NVRTC, without CuPy and without a GPU.

NVIDIA's runtime compiler (``libnvrtc``, from the ``nvidia-cuda-nvrtc-cu12``
wheel or a CUDA toolkit) turns CUDA C++ into PTX and, running ptxas, a CUBIN on
the host alone: no driver and no device are needed.  This module calls it through :mod:`ctypes` so that
``tests/test_cuda_sources.py`` can compile every kernel of
:mod:`threefactor.backends._cuda_source` on a CPU-only machine.

* :class:`~._cuda_source.RawModuleSource` and :class:`~._cuda_source.RawKernelSource`
  compile as they are, with their template instantiations (name expressions).
* An :class:`~._cuda_source.ElementwiseSource` is only a loop body; CuPy wraps
  it in a generated kernel.  :func:`elementwise_program` writes a stand-in for
  that kernel: ``typedef <ctype> T;`` for each type placeholder, a grid-stride
  loop over ``ptrdiff_t i``, each non-raw input read as ``const T &name``
  and each non-raw output bound as ``T &name`` at index ``i``, each ``raw``
  parameter an indexable array ``name[k]`` with ``name.size()``, and
  ``_ind.size()`` the loop length.  It does not include CuPy's headers (so
  ``complex<T>``, ``float16`` and CuPy's helpers are unknown) and sees every
  non-raw input as an array (CuPy passes a Python scalar by value as ``T name``).

Each check also verifies that the kernel symbol CuPy will look up
(the ``name``, or the lowered name of each name expression) is in the PTX.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import importlib.util
import os
import re
from typing import Dict, NamedTuple

import numpy as np

from threefactor.backends._cuda_source import ElementwiseSource, RawKernelSource, RawModuleSource

#: The architecture compiled for: a real one (H100), so that NVRTC also runs ptxas to a
#: CUBIN, as CuPy does for the device it runs on; the PTX is read as well.
ARCH = "sm_90"
#: The language standard CuPy asks NVRTC for by default.
STD = "--std=c++14"

_NVRTC_SUCCESS = 0
_NVRTC_ERROR_COMPILATION = 6

#: C type of each NumPy dtype an ElementwiseKernel parameter may name (CuPy's spelling).
_DTYPE_CTYPES = {
    np.dtype(np.bool_): "bool",
    np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int16): "short", np.dtype(np.uint16): "unsigned short",
    np.dtype(np.int32): "int", np.dtype(np.uint32): "unsigned int",
    np.dtype(np.int64): "long long", np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.float32): "float", np.dtype(np.float64): "double",
}


class NvrtcUnavailable(RuntimeError):
    """libnvrtc cannot be found or loaded here (the message says where it was looked for)."""


class CompileError(RuntimeError):
    """NVRTC rejected a program; ``log`` is the compiler's log and ``program`` the source it compiled."""

    def __init__(self, message, log="", program=""):
        super().__init__(f"{message}\n{log}".rstrip())
        self.log, self.program = log, program


class Compiled(NamedTuple):
    """A successful compilation: the PTX text, the compiler log (warnings), and
    ``lowered``, the mangled symbol of each name expression."""

    ptx: str
    log: str
    lowered: Dict[str, str]


# -- finding and loading libnvrtc --------------------------------------------------------
def _candidate_paths():
    """Where libnvrtc may be: the pip wheel's ``nvidia/cuda_nvrtc/lib`` first, then the system."""
    paths = []
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations if spec is not None else ()) or ():
        paths += sorted(p for p in glob.glob(os.path.join(root, "lib", "libnvrtc.so*"))
                        if "builtins" not in p and ".alt." not in p)
    system = ctypes.util.find_library("nvrtc")
    if system:
        paths.append(system)
    return paths


@functools.lru_cache(maxsize=None)
def load_nvrtc():
    """The loaded libnvrtc (a :class:`ctypes.CDLL` with typed functions); raises :class:`NvrtcUnavailable`."""
    paths = _candidate_paths()
    errors = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        _declare(lib)
        return lib
    where = "; ".join(errors) or "no libnvrtc in the nvidia-cuda-nvrtc-cu12 wheel or on the library path"
    raise NvrtcUnavailable(f"NVRTC is not available ({where}): pip install nvidia-cuda-nvrtc-cu12")


def _declare(lib):
    prog, p_prog = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    strings, size = ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)
    signatures = {
        "nvrtcVersion": [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
        "nvrtcCreateProgram": [p_prog, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, strings, strings],
        "nvrtcAddNameExpression": [prog, ctypes.c_char_p],
        "nvrtcCompileProgram": [prog, ctypes.c_int, strings],
        "nvrtcGetProgramLogSize": [prog, size],
        "nvrtcGetProgramLog": [prog, ctypes.c_char_p],
        "nvrtcGetPTXSize": [prog, size],
        "nvrtcGetPTX": [prog, ctypes.c_char_p],
        "nvrtcGetLoweredName": [prog, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)],
        "nvrtcDestroyProgram": [p_prog],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p


def nvrtc_version():
    """(major, minor) of the loaded NVRTC."""
    lib = load_nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _ok(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def _ok(lib, status, what):
    if status != _NVRTC_SUCCESS:
        raise RuntimeError(f"{what} failed: {lib.nvrtcGetErrorString(status).decode()}")


# -- compiling ---------------------------------------------------------------------------
def compile_cuda(code, *, name="kernel.cu", name_expressions=(), options=(STD,), arch=ARCH):
    """Compile CUDA C++ ``code`` to PTX for ``arch``; raises :class:`CompileError` with the log.

    ``name_expressions`` (e.g. ``"row_centre<float>"``) are instantiated and
    their mangled names returned in :attr:`Compiled.lowered`.
    """
    lib = load_nvrtc()
    prog = ctypes.c_void_p()
    _ok(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), code.encode(), name.encode(), 0, None, None),
        "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            _ok(lib, lib.nvrtcAddNameExpression(prog, expr.encode()), f"nvrtcAddNameExpression({expr!r})")
        opts = [o.encode() for o in (*options, f"--gpu-architecture={arch}")]
        status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        log = _read(lib, prog, lib.nvrtcGetProgramLogSize, lib.nvrtcGetProgramLog)
        if status == _NVRTC_ERROR_COMPILATION:
            raise CompileError(f"NVRTC could not compile {name}:", log, code)
        _ok(lib, status, f"nvrtcCompileProgram({name})")
        ptx = _read(lib, prog, lib.nvrtcGetPTXSize, lib.nvrtcGetPTX)
        lowered = {}
        for expr in name_expressions:
            out = ctypes.c_char_p()
            _ok(lib, lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)),
                f"nvrtcGetLoweredName({expr!r})")
            lowered[expr] = out.value.decode()
        return Compiled(ptx, log, lowered)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _read(lib, prog, get_size, get_text):
    n = ctypes.c_size_t()
    _ok(lib, get_size(prog, ctypes.byref(n)), get_size.__name__)
    buf = ctypes.create_string_buffer(n.value)
    _ok(lib, get_text(prog, buf), get_text.__name__)
    return buf.value.decode(errors="replace")


def _require_entries(compiled, symbols, name, code):
    """Raise :class:`CompileError` unless every kernel symbol is an ``.entry`` of the PTX."""
    entries = set(re.findall(r"\.entry\s+([A-Za-z_$][\w$]*)", compiled.ptx))
    missing = [s for s in symbols if s not in entries]
    if missing:
        raise CompileError(f"{name}: kernel symbol(s) {missing} not in the compiled program "
                           f"(it has {sorted(entries)})", compiled.log, code)
    return compiled


# -- the three kinds of source -----------------------------------------------------------
class _Param(NamedTuple):
    raw: bool
    type: str
    name: str


def _params(text):
    """CuPy parameter list ``"raw T x, int32 n"`` -> [_Param(raw, type, name)]."""
    params = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        words = item.split()
        if len(words) not in (2, 3) or (len(words) == 3 and words[0] != "raw"):
            raise ValueError(f"cannot read the CuPy parameter {item!r}")
        params.append(_Param(len(words) == 3, words[-2], words[-1]))
    return params


def _ctype(type_name, placeholders):
    """The C type of a CuPy parameter type; a one-letter type is a placeholder (kept in ``placeholders``)."""
    if len(type_name) == 1:
        if type_name not in placeholders:
            placeholders.append(type_name)
        return type_name
    try:
        return _DTYPE_CTYPES[np.dtype(type_name)]
    except (TypeError, KeyError) as exc:
        raise ValueError(f"the NVRTC check does not know the CuPy type {type_name!r}") from exc


def elementwise_program(source: ElementwiseSource, ctype: str = "float") -> str:
    """CUDA C++ close to what ``cupy.ElementwiseKernel`` generates for ``source``,
    with every type placeholder (``T``, ...) set to ``ctype``."""
    placeholders, args, binds = [], [], []
    for is_out, text in ((False, source.in_params), (True, source.out_params)):
        for p in _params(text):
            t = _ctype(p.type, placeholders)
            if p.raw:
                args.append(f"_RawArray<{t}> {p.name}")
            else:
                args.append(f"{'' if is_out else 'const '}{t}* _raw_{p.name}")
                binds.append(f"        {'' if is_out else 'const '}{t} &{p.name} = _raw_{p.name}[i];")
    typedefs = "".join(f"typedef {ctype} {k};\n" for k in placeholders)
    args.append("_Indexer _ind")
    return f"""// stand-in for cupy.ElementwiseKernel {source.name!r}
{typedefs}template <typename V> struct _RawArray {{        // a `raw` parameter (CuPy: CArray)
    V* data_; ptrdiff_t size_;
    __device__ V& operator[](ptrdiff_t k) const {{ return data_[k]; }}
    __device__ ptrdiff_t size() const {{ return size_; }}
}};
struct _Indexer {{ ptrdiff_t size_; __device__ ptrdiff_t size() const {{ return size_; }} }};

extern "C" __global__ void {source.name}({", ".join(args)}) {{
    for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < _ind.size();
         i += (ptrdiff_t)blockDim.x * gridDim.x) {{
{chr(10).join(binds)}
{source.operation};
    }}
}}
"""


def check_elementwise(source: ElementwiseSource, ctype: str = "float") -> Compiled:
    """Compile the stand-in kernel of ``source`` with placeholders = ``ctype``."""
    code = elementwise_program(source, ctype)
    compiled = compile_cuda(code, name=f"{source.name}<{ctype}>.cu")
    return _require_entries(compiled, [source.name], source.name, code)


def check_raw_module(source: RawModuleSource) -> Compiled:
    """Compile a RawModule with all its name expressions instantiated."""
    compiled = compile_cuda(source.code, name="raw_module.cu", name_expressions=source.name_expressions)
    return _require_entries(compiled, list(compiled.lowered.values()), "RawModule", source.code)


def check_raw_kernel(source: RawKernelSource) -> Compiled:
    """Compile a RawKernel and check that its ``extern "C"`` kernel is there."""
    compiled = compile_cuda(source.code, name=f"{source.name}.cu")
    return _require_entries(compiled, [source.name], source.name, source.code)


def check_source(source, ctype: str = "float") -> Compiled:
    """Compile any source record (``ctype`` applies to ElementwiseSource placeholders only)."""
    if isinstance(source, ElementwiseSource):
        return check_elementwise(source, ctype)
    if isinstance(source, RawModuleSource):
        return check_raw_module(source)
    if isinstance(source, RawKernelSource):
        return check_raw_kernel(source)
    raise TypeError(f"not a CUDA source record: {type(source).__name__}")
