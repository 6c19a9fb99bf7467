"""What a user passes, as an array of the chosen backend, with errors that name the argument.

One conversion for the public API (:mod:`threefactor.api`), the online rule (:mod:`threefactor.rule.online`)
and the networks' batches (:mod:`threefactor.nn.mlp`).
"""
from __future__ import annotations

import numpy as np


def type_name(value) -> str:
    """``module.Type`` of ``value`` for error messages, e.g. ``builtins.NoneType``, ``cupy.ndarray``."""
    return f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"


def as_array(be, value, name):
    """``value`` as it is when it is an array of backend ``be``, else ``np.asarray(value)``; a TypeError
    naming ``name`` for a GPU array given to a host backend, or what numpy cannot convert."""
    if be.is_native(value):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        raise TypeError(f"{name} is a GPU array ({type_name(value)}) but backend={be.name!r} works on host "
                        f"arrays: use backend='cupy', or copy it to the host first (e.g. {name}.get())")
    try:
        return np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be an array of numbers, got {type_name(value)}: {exc}") from None


def real_array(be, value, name):
    """:func:`as_array`, and a TypeError naming ``name`` unless it holds real numbers (lists are fine;
    strings, objects, complex are not)."""
    value = as_array(be, value, name)
    if value.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    return value
