"""Backends: interchangeable implementations of the same few primitives.

``numpy`` is the reference, ``numba`` the fast CPU path, ``cupy`` the GPU path.
A backend that cannot run here raises :class:`BackendUnavailable` with the
reason when asked for, never an ImportError when threefactor is imported.
"""
from __future__ import annotations

import functools

from threefactor.rule.rules import choice_error

BACKENDS = ("numpy", "numba", "cupy")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (the message says why)."""


@functools.lru_cache(maxsize=None)
def _load(name):
    if name == "numpy":
        from threefactor.backends.numpy import NumpyBackend
        return NumpyBackend()
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable("numba is not installed: pip install numba") from exc
        from threefactor.backends.numba import NumbaBackend
        return NumbaBackend()
    if name == "cupy":
        try:
            import cupy
        except ImportError as exc:
            from threefactor.install_hint import install_hint
            raise BackendUnavailable(f"cupy is not installed: {install_hint('gpu')}") from exc
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise BackendUnavailable("cupy is installed but no GPU is visible")
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise BackendUnavailable(f"cupy is installed but no GPU is usable: {exc}") from exc
        from threefactor.backends.cupy import CupyBackend
        return CupyBackend()
    raise choice_error("backend", name, BACKENDS)


def get_backend(name="numpy"):
    """The backend object called ``name`` (a backend object is returned as is)."""
    if not isinstance(name, str):
        if hasattr(name, "forward") and hasattr(name, "hebbian"):
            return name
        raise TypeError(f"backend must be a name ({', '.join(BACKENDS)}), got {type(name).__name__}")
    if name not in BACKENDS:
        raise choice_error("backend", name, BACKENDS)
    return _load(name)


def available_backends():
    """Names of the backends usable here, e.g. ``("numpy", "numba")``."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return tuple(names)
