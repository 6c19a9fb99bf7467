"""Shared fixtures: the CPU backends usable here and small seeded problems.

With ``THREEFACTOR_EMULATE_CUPY=1`` the CPU emulation of CuPy (``tests/cupy_emulator``)
is installed before any test module imports ``cupy``, so that the GPU tests
(``-m gpu``) run the CuPy backend and its CUDA kernels on the CPU.
"""
from __future__ import annotations

import cupy_emulator

if cupy_emulator.requested():
    cupy_emulator.install()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from threefactor.backends import BackendUnavailable, get_backend  # noqa: E402


def backend_usable(name):
    """Whether backend ``name`` loads here (a module still being written counts as missing)."""
    try:
        get_backend(name)
    except (BackendUnavailable, ImportError):
        return False
    return True


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    """Each CPU backend; numba skips cleanly where it does not load."""
    if not backend_usable(request.param):
        pytest.skip(f"backend {request.param} is unavailable here")
    return request.param


def _make_problem(m=6, n_in=5, n_out=8, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n_in))
    w = rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)
    labels = rng.permutation(np.arange(m) % n_classes)
    return x, w, labels


@pytest.fixture
def make_problem():
    """Factory ``make_problem(m=6, n_in=5, n_out=8, n_classes=3, seed=0) -> (x, w, labels)``:
    x (m, n_in), w (n_out, n_in), integer labels (m,), every class present when m >= n_classes."""
    return _make_problem


@pytest.fixture(autouse=True)
def _backend_registry_restored():
    """A test (or a README example) that registers a backend leaves the registry as it found it."""
    from threefactor import backends
    before = dict(backends._FACTORIES)
    yield
    if backends._FACTORIES != before:
        backends._FACTORIES.clear()
        backends._FACTORIES.update(before)
        backends._load.cache_clear()
