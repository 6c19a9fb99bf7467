"""Emulated ``cupy.cuda``: one device, streams and events on the emulated device's timeline.

Every stream shares the one timeline of :mod:`cupy._emu.device` (work is never
concurrent across streams).  ``Stream.done`` is whether the queued work is finished,
``synchronize`` waits for it (a counted host synchronisation), an ``Event`` records
the time at which the device reaches it.  Stream capture runs the captured work
eagerly and refuses host synchronisations inside it, as CUDA does; replaying the
resulting graph is not emulated (``Graph.launch`` raises ``NotImplementedError``).
"""
from __future__ import annotations

import itertools
import time

from .._emu import device as _device
from . import compiler, driver, memory, runtime  # noqa: F401
from .memory import MemoryPool, OutOfMemoryError, PinnedMemoryPool  # noqa: F401

_ptrs = itertools.count(0x1000)


def is_available():
    return True


class Stream:
    """A CUDA stream (see the module docstring)."""

    def __init__(self, null=False, non_blocking=False, ptr=0, priority=0):
        self.ptr = 0 if null else next(_ptrs)
        self.non_blocking, self.priority = non_blocking, priority
        self._previous = []
        self._capturing = False

    def __enter__(self):
        self._previous.append(_current[0])
        _current[0] = self
        return self

    def __exit__(self, *exc):
        _current[0] = self._previous.pop()

    def use(self):
        _current[0] = self
        return self

    @property
    def done(self):
        return _device.idle()

    def synchronize(self):
        _device.host_sync("Stream.synchronize()")

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def add_callback(self, callback, arg):
        callback(self, None, arg)

    def begin_capture(self, mode=None):
        if self._capturing:
            raise runtime.CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._capturing = True
        _device._capturing.append(self)

    def is_capturing(self):
        return self._capturing

    def end_capture(self):
        if not self._capturing:
            raise runtime.CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        self._capturing = False
        _device._capturing.remove(self)
        return Graph()

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return hash(self.ptr)


class Graph:
    """A captured CUDA graph: capture is emulated (eagerly), replay is not."""

    def launch(self, stream=None):
        raise NotImplementedError("the CuPy emulator does not replay CUDA graphs")

    def upload(self, stream=None):
        pass


Stream.null = Stream(null=True)
_current = [Stream.null]


def get_current_stream(device_id=None):
    return _current[0]


class Event:
    """A CUDA event: the time at which the device reaches it."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.disable_timing = disable_timing
        self._t = None

    def record(self, stream=None):
        self._t = _device.finish_time()

    @property
    def done(self):
        return self._t is None or time.perf_counter() >= self._t

    def synchronize(self):
        _device.host_sync("Event.synchronize()")


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (a synchronisation, as in CUDA)."""
    if start_event._t is None or end_event._t is None:
        raise runtime.CUDARuntimeError("cudaErrorInvalidResourceHandle: an event was not recorded")
    end_event.synchronize()
    return (end_event._t - start_event._t) * 1e3


class Device:
    """The one emulated device (id 0)."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        runtime.setDevice(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __int__(self):
        return self.id

    def use(self):
        pass

    def synchronize(self):
        _device.host_sync("Device.synchronize()")

    compute_capability = "90"

    @property
    def attributes(self):
        props = runtime.getDeviceProperties(self.id)
        return {"MaxThreadsPerBlock": props["maxThreadsPerBlock"], "WarpSize": 32,
                "MultiProcessorCount": props["multiProcessorCount"]}

    @property
    def mem_info(self):
        return runtime.memGetInfo()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id
