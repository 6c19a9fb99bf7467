"""Backends: interchangeable implementations of the same few primitives.

``numpy`` is the reference, ``numba`` the fast CPU path, ``cupy`` the GPU path;
the interface they implement is :class:`threefactor.backends.base.Backend`.
Backends are found through one registry: the built-ins register themselves
below, another package's backend is registered with :func:`register_backend`
or named in the entry-point group ``threefactor.backends`` of its
distribution (``name = "package.module:factory"``; the factory is called with
no arguments and returns a :class:`~threefactor.backends.base.Backend`).
A backend that cannot run here raises :class:`BackendUnavailable` with the
reason when asked for, never an ImportError when threefactor is imported.
"""
from __future__ import annotations

import functools

from threefactor.backends.base import Backend, BackendUnavailable
from threefactor.rule.rules import choice_error

#: entry-point group in which installed distributions name their backends
ENTRY_POINT_GROUP = "threefactor.backends"
#: the built-in backends, in order of preference for nothing (numpy first: the reference)
BACKENDS = ("numpy", "numba", "cupy")

_FACTORIES = {}        # name -> zero-argument callable returning a Backend
_entry_points_read = False


def _numpy():
    from threefactor.backends.numpy import NumpyBackend
    return NumpyBackend()


def _numba():
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable("numba is not installed: pip install numba") from exc
    from threefactor.backends.numba import NumbaBackend
    return NumbaBackend()


def _cupy():
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


def register_backend(name, factory, *, replace=False):
    """Make ``get_backend(name)`` return ``factory()`` (called once, on first use).

    Parameters
    ----------
    name : str
        The backend's name (``--backend NAME``, ``backend=NAME``), lower case.
    factory : callable () -> Backend, or a Backend subclass
        Raises :class:`BackendUnavailable` (with the reason) where the backend cannot run.
    replace : bool
        Allow replacing a registered backend of the same name (the built-ins included).
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a backend name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory of backend {name!r} must be callable (a Backend subclass or a function "
                        f"returning one), got {type(factory).__name__}")
    if name in _FACTORIES and not replace and _FACTORIES[name] is not factory:
        raise ValueError(f"a backend named {name!r} is already registered (replace=True to replace it)")
    _FACTORIES[name] = factory
    _load.cache_clear()


def unregister_backend(name):
    """Remove a registered backend (tests; the built-ins can be removed too)."""
    _FACTORIES.pop(name, None)
    _load.cache_clear()


def _entry_point_factories():
    """(name, loader) of the entry points in group ``threefactor.backends``."""
    from importlib import metadata
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:                                   # Python < 3.10: a dict of groups
        eps = metadata.entry_points().get(ENTRY_POINT_GROUP, ())
    return [(ep.name, ep) for ep in eps]


def _read_entry_points(force=False):
    """Register the backends that installed distributions name (once; ``force`` reads them again)."""
    global _entry_points_read
    if _entry_points_read and not force:
        return
    _entry_points_read = True
    for name, ep in _entry_point_factories():
        if name in _FACTORIES:
            continue

        def factory(ep=ep, name=name):
            try:
                made = ep.load()
            except ImportError as exc:
                raise BackendUnavailable(f"backend {name!r} (entry point {ep.value}) does not import: "
                                         f"{exc}") from exc
            return made()
        _FACTORIES[name] = factory
    _load.cache_clear()


def backend_names():
    """Every registered backend name (built-ins first), usable here or not."""
    _read_entry_points()
    return tuple(_FACTORIES)


@functools.lru_cache(maxsize=None)
def _load(name):
    factory = _FACTORIES.get(name)
    if factory is None:
        raise choice_error("backend", name, backend_names())
    be = factory()
    if not isinstance(be, Backend):
        raise TypeError(f"backend {name!r}: its factory returned {type(be).__name__}, not a "
                        "threefactor.backends.base.Backend")
    return be


def get_backend(name="numpy"):
    """The backend object called ``name`` (a :class:`Backend` object, or an object with the primitives
    ``forward`` and ``hebbian`` as before the interface existed, is returned as is)."""
    if isinstance(name, Backend) or not isinstance(name, str) and hasattr(name, "forward") and hasattr(name, "hebbian"):
        return name
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name ({', '.join(backend_names())}) or a Backend, "
                        f"got {type(name).__name__}")
    if name not in _FACTORIES:
        _read_entry_points(force=True)          # a distribution installed since the last look
    if name not in _FACTORIES:
        raise choice_error("backend", name, backend_names())
    return _load(name)


def available_backends():
    """Names of the backends usable here, e.g. ``("numpy", "numba")`` (registered ones included)."""
    names = []
    for name in backend_names():
        try:
            get_backend(name)
        except (BackendUnavailable, ImportError):
            continue
        names.append(name)
    return tuple(names)


def backend_of(array):
    """The first registered backend (in :func:`backend_names` order) usable here whose arrays
    ``array`` is one of (a numpy array: ``numpy``), or None.  For code that is handed arrays
    without their backend (an optimiser built from bare parameters)."""
    for name in backend_names():
        try:
            be = get_backend(name)
        except (BackendUnavailable, ImportError):
            continue
        if be.is_native(array):
            return be
    return None


def gpu_info():
    """Name, memory and CUDA versions of GPU 0 (through CuPy), or None without one."""
    from threefactor.backends.cupy import gpu_info as _gpu_info
    return _gpu_info()


def gpu_count():
    """Number of GPUs CuPy sees here (0 where it sees none or is not installed)."""
    from threefactor.backends.cupy import gpu_count as _gpu_count
    return _gpu_count()


def set_compute_threads(n):
    """Use ``n`` threads in the compiled kernels of the CPU backends (Numba); returns
    ``{"numba": threads}`` or ``{}`` where Numba is missing."""
    try:
        from threefactor.backends.numba import set_threads
    except ImportError:
        return {}
    return {"numba": set_threads(n)}


for _name, _factory in (("numpy", _numpy), ("numba", _numba), ("cupy", _cupy)):
    register_backend(_name, _factory)
del _name, _factory
