"""CUDA kernel sources as plain data, and the lazy CuPy kernels built from them.

Every CUDA kernel of the CuPy backend is declared once, as one of the source
records below, and wrapped in a :class:`LazyKernel` that builds the CuPy
object on first use.  The records hold only strings, so they import without
CuPy or a GPU, and :mod:`threefactor.backends._nvrtc_check` (used by
``tests/test_cuda_sources.py``) compiles exactly the strings that CuPy will
compile, on a machine without a GPU.

==========================  =========================================================
record                      built as
==========================  =========================================================
:class:`ElementwiseSource`  ``cupy.ElementwiseKernel(in_params, out_params, operation, name)``
:class:`RawModuleSource`    ``cupy.RawModule(code=code, name_expressions=name_expressions)``
:class:`RawKernelSource`    ``cupy.RawKernel(code, name)``
==========================  =========================================================
"""
from __future__ import annotations

from typing import NamedTuple, Tuple


class ElementwiseSource(NamedTuple):
    """The four strings of a ``cupy.ElementwiseKernel``.

    ``in_params`` / ``out_params`` are CuPy parameter lists such as
    ``"raw T G, int64 m, T s"``; ``operation`` is the loop body run for each
    output index ``i``; ``name`` is the kernel's symbol.
    """

    in_params: str
    out_params: str
    operation: str
    name: str

    def build(self):
        """The ``cupy.ElementwiseKernel`` (needs CuPy; compiles on its first call)."""
        import cupy
        return cupy.ElementwiseKernel(self.in_params, self.out_params, self.operation, self.name)


class RawModuleSource(NamedTuple):
    """A ``cupy.RawModule``: CUDA C++ ``code`` and the template instantiations to emit.

    ``name_expressions`` are the exact strings later passed to
    ``RawModule.get_function``, e.g. ``"row_centre<float>"``.
    """

    code: str
    name_expressions: Tuple[str, ...]

    def build(self):
        """The ``cupy.RawModule`` (needs CuPy)."""
        import cupy
        return cupy.RawModule(code=self.code, name_expressions=list(self.name_expressions))


class RawKernelSource(NamedTuple):
    """A ``cupy.RawKernel``: CUDA C++ ``code`` and the ``extern "C"`` kernel ``name`` in it."""

    code: str
    name: str

    def build(self):
        """The ``cupy.RawKernel`` (needs CuPy)."""
        import cupy
        return cupy.RawKernel(self.code, self.name)


class LazyKernel:
    """A CuPy kernel built from ``source`` on first use (so importing needs no CuPy).

    Calling it calls the built kernel; :meth:`get` returns the kernel itself
    (a ``RawModule`` for :class:`RawModuleSource`).
    """

    def __init__(self, source):
        self.source = source
        self._obj = None
        self._functions = {}

    def get(self):
        """The built CuPy object (built and cached on the first call)."""
        if self._obj is None:
            self._obj = self.source.build()
        return self._obj

    def function(self, name_expression):
        """``RawModule.get_function(name_expression)`` of a :class:`RawModuleSource`, looked up once
        (a lookup costs about as much host time as a launch)."""
        fn = self._functions.get(name_expression)
        if fn is None:
            fn = self._functions[name_expression] = self.get().get_function(name_expression)
        return fn

    def __call__(self, *args, **kwargs):
        return self.get()(*args, **kwargs)


def lazy_kernels(module):
    """``{attribute name: LazyKernel}`` of every kernel declared at the top level of ``module``."""
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, LazyKernel)}
