"""Every CUDA source of the project compiles with NVRTC, on a machine without a GPU.

The CuPy backend's kernels (:mod:`threefactor.backends._cuda_source` records,
found as the ``LazyKernel`` constants of the modules below) are compiled by
NVIDIA's runtime compiler through :mod:`threefactor.backends._nvrtc_check`:
ElementwiseKernels inside a stand-in for CuPy's generated kernel, with the
type placeholder T = float and T = double; RawModules with their name
expressions of each dtype; RawKernels as they are.  A float instantiation
must also do no float64 arithmetic.  CUDA strings in tests/ and benchmarks/
compile too.

Skipped (with the reason) where libnvrtc cannot be loaded (``pip install
nvidia-cuda-nvrtc-cu12``, part of the ``dev`` extras); in CI (``CI`` set, on
Linux) a missing NVRTC is a failure, so that CI never skips these silently.
"""
from __future__ import annotations

import ast
import os
import pathlib
import re
import sys
import types

import pytest

from threefactor.backends import _conv_cupy, _online_cupy
from threefactor.backends import cupy as cupy_backend
from threefactor.backends._cuda_source import ElementwiseSource, LazyKernel, RawKernelSource, RawModuleSource, lazy_kernels
from threefactor.backends._nvrtc_check import CompileError, NvrtcUnavailable, check_source, compile_cuda, elementwise_program, nvrtc_version

#: The modules that declare CUDA kernels (a test below checks that no other module does).
KERNEL_MODULES = (cupy_backend, _conv_cupy, _online_cupy)
CTYPES = ("float", "double")
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nvrtc():
    """NVRTC's (major, minor) version; skips where it cannot be loaded (fails in CI on Linux)."""
    try:
        return nvrtc_version()
    except NvrtcUnavailable as exc:
        if os.environ.get("CI") and sys.platform.startswith("linux"):
            pytest.fail(f"CI must compile the CUDA sources: {exc}")
        pytest.skip(str(exc))


def _cases():
    """One case per kernel and dtype: (source, ctype or None)."""
    for module in KERNEL_MODULES:
        short = module.__name__.rsplit(".", 1)[-1]
        for attr, kernel in lazy_kernels(module).items():
            src = kernel.source
            if isinstance(src, ElementwiseSource):
                for t in CTYPES:
                    yield pytest.param(src, t, id=f"{short}.{attr}[{t}]")
            elif isinstance(src, RawModuleSource):
                typed = {t: tuple(e for e in src.name_expressions if e.endswith(f"<{t}>")) for t in CTYPES}
                untyped = tuple(e for e in src.name_expressions if not any(e in v for v in typed.values()))
                for t, exprs in (*typed.items(), (None, untyped)):
                    if exprs:
                        yield pytest.param(src._replace(name_expressions=exprs), t, id=f"{short}.{attr}[{t}]")
            else:
                yield pytest.param(src, None, id=f"{short}.{attr}")


CASES = list(_cases())


def _compiled_or_fail(compile_fn, *args):
    """``compile_fn(*args)``, or a test failure showing NVRTC's log and the program it compiled."""
    try:
        return compile_fn(*args)
    except CompileError as exc:
        error = exc
    pytest.fail(f"{error}\n--- program ---\n{error.program}", pytrace=False)


def _float64_ops(ptx):
    """The distinct float64 instructions in PTX (e.g. ``mul.f64``, ``cvt.f64.f32``)."""
    return sorted({m.group(0) for m in re.finditer(r"\b[a-z][\w.]*\.f64\b[\w.]*", ptx)})


@pytest.mark.parametrize("source,ctype", CASES)
def test_kernel_compiles(nvrtc, source, ctype):
    """NVRTC compiles the kernel without errors or warnings, and the kernel symbol is emitted."""
    compiled = _compiled_or_fail(check_source, source, ctype or "float")
    assert compiled.log.strip() == "", f"NVRTC warnings:\n{compiled.log}"
    if ctype == "float":
        assert _float64_ops(compiled.ptx) == [], "the float instantiation computes in float64"


def test_every_kernel_module_is_checked():
    """No CuPy kernel is built outside the source records, and only KERNEL_MODULES declare them."""
    assert all(lazy_kernels(m) for m in KERNEL_MODULES)
    package = ROOT / "threefactor"
    assert not [p for p in package.rglob("*") if p.suffix in (".cu", ".cuh")]
    constructors = re.compile(r"\b(ElementwiseKernel|ReductionKernel|RawKernel|RawModule)\(|\.fuse\(|cupyx\.jit")
    declared = {pathlib.Path(m.__file__).resolve() for m in KERNEL_MODULES}
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "_cuda_source.py":
            assert not constructors.search(text), f"{path}: build CuPy kernels from a _cuda_source record"
        if "LazyKernel(" in text and path.name != "_cuda_source.py":
            assert path.resolve() in declared, f"{path} declares kernels: add it to KERNEL_MODULES"


def test_lazy_kernels_build_the_cupy_objects_from_their_records(monkeypatch):
    """What NVRTC checked is what CuPy gets: each record builds its CuPy object from the same strings, once."""
    calls = []
    fake = types.SimpleNamespace(**{kind: (lambda *a, _k=kind, **kw: calls.append((_k, a, kw)) or object())
                                    for kind in ("ElementwiseKernel", "RawModule", "RawKernel")})
    monkeypatch.setitem(sys.modules, "cupy", fake)
    kernel = LazyKernel(cupy_backend._GAUSSIAN.source)
    assert kernel.get() is kernel.get() and calls == [("ElementwiseKernel", tuple(kernel.source), {})]
    calls.clear()
    LazyKernel(cupy_backend._ROWS.source).get()
    assert calls == [("RawModule", (), {"code": cupy_backend._ROWS.source.code,
                                        "name_expressions": list(cupy_backend._ROWS.source.name_expressions)})]
    calls.clear()
    src = _online_cupy._ACCUMULATE_F64.source
    LazyKernel(src).get()
    assert calls == [("RawKernel", (src.code, "online_accumulate_f64"), {})]


def _cuda_strings():
    """CUDA strings (literals with ``__global__``) in tests/ and benchmarks/, outside this file."""
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).glob("**/*.py")):
            if path.resolve() == pathlib.Path(__file__).resolve():
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "__global__" in node.value:
                    yield pytest.param(node.value, id=f"{folder}/{path.name}:{node.lineno}")


@pytest.mark.parametrize("code", list(_cuda_strings()))
def test_cuda_strings_in_tests_and_benchmarks_compile(nvrtc, code):
    compiled = _compiled_or_fail(compile_cuda, code)
    assert ".entry" in compiled.ptx and compiled.log.strip() == "", compiled.log


# -- the check itself can fail ----------------------------------------------------------
BROKEN = [
    pytest.param(ElementwiseSource("T a", "T z", "z = a * undefined_scale", "broken_undefined"),
                 r'identifier "undefined_scale" is undefined', id="undefined-identifier"),
    pytest.param(ElementwiseSource("T a", "T z", "a = 0; z = a", "broken_const_input"),
                 r"expression must be a modifiable lvalue", id="write-to-an-input"),
    pytest.param(ElementwiseSource("raw T x", "T z", "z = x", "broken_raw_as_value"),
                 r"no suitable conversion function", id="raw-array-used-as-a-value"),
    pytest.param(RawModuleSource("template<typename T> __global__ void f(T* x) { x[0] = T::nope; }",
                                 ("f<float>",)),
                 r"must be a class", id="error-only-on-instantiation"),
    pytest.param(RawKernelSource('extern "C" __global__ void spin(int* x) { x[0] = 1; }', "spinn"),
                 r"'spinn'.* not in the compiled program", id="wrong-kernel-name"),
    pytest.param(RawKernelSource("__global__ void k(float* x) { x[0] = 1; }", "k"),
                 r"not in the compiled program", id="name-mangled-without-extern-C"),
]


@pytest.mark.parametrize("source,message", BROKEN)
def test_broken_sources_are_reported_with_the_log(nvrtc, source, message):
    with pytest.raises(CompileError, match=message) as info:
        check_source(source, "float")
    assert info.value.program  # the failing program travels with the error


def test_float64_arithmetic_in_a_float_kernel_is_seen(nvrtc):
    compiled = check_source(ElementwiseSource("T a", "T z", "z = a * 0.1", "double_literal"), "float")
    assert "mul.f64" in _float64_ops(compiled.ptx)
    compiled = check_source(ElementwiseSource("T a", "T z", "z = a * (T)0.1", "cast_literal"), "float")
    assert _float64_ops(compiled.ptx) == []


def test_elementwise_program_binds_parameters_like_cupy():
    src = ElementwiseSource("raw int64 labels, T a, int32 k", "T z, int8 w", "z = a", "bind")
    code = elementwise_program(src, "double")
    for line in ("typedef double T;", "_RawArray<long long> labels", "const T &a = _raw_a[i];",
                 "const int &k = _raw_k[i];", "T &z = _raw_z[i];", "signed char &w = _raw_w[i];",
                 'extern "C" __global__ void bind('):
        assert line in code, line
    with pytest.raises(ValueError, match="float16"):
        elementwise_program(ElementwiseSource("float16 a", "T z", "z = a", "half"))


def test_every_backend_has_every_primitive():
    """The backends are interchangeable: each public method of the numpy reference exists on the
    others (checked without a GPU: the CuPy backend's module imports without CuPy)."""
    from threefactor.backends.cupy import CupyBackend
    from threefactor.backends.numba import NumbaBackend
    from threefactor.backends.numpy import NumpyBackend

    primitives = {k for k, v in vars(NumpyBackend).items() if callable(v) and not k.startswith("_")}
    assert {"keep_select", "layer_objective", "scalars", "hebbian", "gaussian_kernel"} <= primitives
    for cls in (CupyBackend, NumbaBackend):
        assert not primitives - set(dir(cls)), (cls.__name__, sorted(primitives - set(dir(cls))))
