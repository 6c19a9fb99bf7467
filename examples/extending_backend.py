#!/usr/bin/env python
"""Bring your own backend: subclass the numpy reference, register it, use it by name.

A backend implements the primitives of :class:`threefactor.backends.base.Backend`
(a GEMM, the forward pass, the kernel matrix, the Hebbian product, ...); the
rules, networks and the online circuit reach device code only through them.
Subclassing :class:`~threefactor.backends.numpy.NumpyBackend` means overriding
only what you want to change.  This one counts the GEMMs it is asked for::

    python examples/extending_backend.py

Another package makes its backend available without an explicit
``register_backend`` call by naming it in the entry-point group
``threefactor.backends`` (setup.cfg: ``threefactor.backends = mine = my_pkg.backend:MyBackend``).
"""
import numpy as np

import threefactor as tf
from threefactor.backends import get_backend, register_backend
from threefactor.backends.numpy import NumpyBackend


class CountingGemms(NumpyBackend):
    """The numpy primitives, counting the GEMMs: every matmul, and the Hebbian products ΔW = postᵀ x."""

    name = "counting-gemms"

    def __init__(self):
        self.calls = {"matmul": 0, "hebbian": 0}

    def matmul(self, a, b):
        self.calls["matmul"] += 1
        return super().matmul(a, b)

    def hebbian(self, post, x):
        self.calls["hebbian"] += 1
        return super().hebbian(post, x)      # postᵀ x through self.matmul: counted there too


def main():
    register_backend("counting-gemms", CountingGemms, replace=True)
    rng = np.random.default_rng(0)
    x, w, y = rng.normal(size=(32, 20)), rng.normal(size=(16, 20)) / 5, np.arange(32) % 4
    dw = tf.local_update(x, w, y, n_classes=4, groups=4, backend="counting-gemms")
    assert np.array_equal(dw, tf.local_update(x, w, y, n_classes=4, groups=4))   # the reference's bits
    be = get_backend("counting-gemms")
    print(f"local_update on {be.name!r}: |dW| = {np.linalg.norm(dw):.4g}, GEMMs: {be.calls}")
    print("usable backends:", ", ".join(tf.available_backends()))
    return be.calls


if __name__ == "__main__":
    main()
