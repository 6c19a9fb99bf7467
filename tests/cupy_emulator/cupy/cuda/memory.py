"""Emulated ``cupy.cuda.memory``: the default memory pool's accounting (see ``_emu.device``)."""
from __future__ import annotations

from .._emu import device as _device


class OutOfMemoryError(MemoryError):
    pass


class MemoryPool:
    """Bytes of live device arrays (``used_bytes``) and of freed, cached blocks."""

    def __init__(self, allocator=None):
        self._limit = 0

    def used_bytes(self):
        return _device.used_bytes()

    def free_bytes(self):
        return _device.free_bytes()

    def total_bytes(self):
        return _device.used_bytes() + _device.free_bytes()

    def free_all_blocks(self, stream=None):
        _device.free_all_blocks()

    def n_free_blocks(self):
        return 0 if _device.free_bytes() == 0 else 1

    def set_limit(self, size=None, fraction=None):
        self._limit = size or 0

    def get_limit(self):
        return self._limit


class PinnedMemoryPool:
    def free_all_blocks(self):
        pass

    def n_free_blocks(self):
        return 0


_default_pool = MemoryPool()
_default_pinned_pool = PinnedMemoryPool()
