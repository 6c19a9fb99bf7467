"""Emulated ``cupyx`` (only ``cupyx.profiler``), part of the CuPy emulator of threefactor's tests."""
from . import profiler  # noqa: F401
