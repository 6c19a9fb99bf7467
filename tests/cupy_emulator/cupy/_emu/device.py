"""The emulated device: its timeline (when queued work finishes), host synchronisations, memory.

A real GPU runs kernels asynchronously: the host only waits when it synchronises
(``Stream.synchronize``, a device-to-host copy, ``float(a)``, ...).  The emulator runs
every kernel at once on the CPU, but keeps a *timeline*: a kernel that spends cycles
of the virtual 1 GHz ``clock64()`` keeps the device busy for that long after its
launch, and a host synchronisation sleeps until the device is idle.  So code that
must not synchronise (an update that stays on the device) can be tested exactly as on
a GPU: queue a spinning kernel, run the code, and check that it neither waited nor
left the stream idle.  Every synchronisation is also counted (:func:`sync_count`),
with its reason (:func:`sync_log`).

The memory pool counts the bytes of live device buffers (rounded up to 512 like
CuPy's pool) and keeps freed ones cached until ``free_all_blocks``.
"""
from __future__ import annotations

import threading
import time
import weakref

#: Virtual clock rate of ``clock64()`` (cycles per second).
CLOCK_HZ = 1.0e9

#: Reentrant: a garbage collection inside a locked section (``track``'s WeakValueDictionary insert can
#: trigger one) runs ``weakref.finalize`` callbacks, i.e. :func:`_released`, on the same thread.
_lock = threading.RLock()
_busy_until = 0.0     # perf_counter() time at which the queued work is done
_clock = 0            # the virtual clock64() counter, carried from launch to launch
_syncs = []           # reasons of the host synchronisations, in order
_capturing = []       # streams in capture mode


class StreamCaptureError(RuntimeError):
    """A host synchronisation while a stream is being captured (cudaErrorStreamCaptureUnsupported)."""


def clock():
    """The current value of the virtual clock64() counter."""
    return _clock


def kernel_ran(clock_after):
    """Record a finished kernel launch whose clock64() counter ended at ``clock_after``."""
    global _busy_until, _clock
    with _lock:
        spent = max(0, clock_after - _clock)
        _clock = clock_after
        now = time.perf_counter()
        _busy_until = max(_busy_until, now) + spent / CLOCK_HZ


def idle():
    """Whether all queued device work is done."""
    return time.perf_counter() >= _busy_until


def finish_time():
    """perf_counter() time at which the queued work is done."""
    return max(_busy_until, time.perf_counter())


def host_sync(reason):
    """The host waits for the device (``reason`` says why); counted in :func:`sync_count`."""
    if _capturing:
        raise StreamCaptureError(f"{reason} while a stream is being captured into a CUDA graph "
                                 "(cudaErrorStreamCaptureUnsupported)")
    _syncs.append(reason)
    wait = _busy_until - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def sync_count():
    """How many host synchronisations happened so far."""
    return len(_syncs)


def sync_log(since=0):
    """The reasons of the host synchronisations from number ``since`` on."""
    return list(_syncs[since:])


# -- memory pool accounting -------------------------------------------------------------
_UNIT = 512
_live = weakref.WeakValueDictionary()   # id(buffer) -> buffer (numpy arrays owning device memory)
_used = 0
_free = 0


def _rounded(nbytes):
    return max(_UNIT, -(-nbytes // _UNIT) * _UNIT)


def _released(nbytes):
    global _used, _free
    with _lock:
        _used -= nbytes
        _free += nbytes


def track(buffer):
    """Count ``buffer`` (the numpy array that owns an emulated device allocation) as used."""
    global _used, _free
    key = id(buffer)
    if _live.get(key) is buffer:
        return
    nbytes = _rounded(buffer.nbytes)
    with _lock:
        _live[key] = buffer
        _used += nbytes
        _free = max(0, _free - nbytes)     # reuses a cached block when there is one
    weakref.finalize(buffer, _released, nbytes)


def used_bytes():
    return _used


def free_bytes():
    return _free


def free_all_blocks():
    global _free
    with _lock:
        _free = 0
