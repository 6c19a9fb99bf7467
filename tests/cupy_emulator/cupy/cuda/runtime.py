"""Emulated ``cupy.cuda.runtime``: one device, CUDA 12.4, no errors."""
from __future__ import annotations

from .._emu import device as _device

is_hip = False
_PROPERTIES = {
    "name": b"CuPy CPU emulator (threefactor tests)", "totalGlobalMem": 16 * 2 ** 30, "sharedMemPerBlock": 48 * 1024,
    "sharedMemPerBlockOptin": 227 * 1024, "regsPerBlock": 65536, "warpSize": 32, "maxThreadsPerBlock": 1024,
    "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2 ** 31 - 1, 65535, 65535), "clockRate": 1_000_000,
    "multiProcessorCount": 1, "major": 9, "minor": 0, "computeMode": 0, "l2CacheSize": 0,
    "memoryClockRate": 1_000_000, "memoryBusWidth": 64,
}


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime error (the emulator raises it for an illegal memory access in a kernel)."""

    def __init__(self, status, *args):
        self.status = status
        super().__init__(status, *args)

    def __str__(self):
        return str(self.status)


def getDeviceCount():
    return 1


def getDevice():
    return 0


def setDevice(device):
    if device != 0:
        raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal ({device})")


def getDeviceProperties(device):
    setDevice(device)
    return dict(_PROPERTIES)


def runtimeGetVersion():
    return 12040


def driverGetVersion():
    return 12040


def deviceSynchronize():
    _device.host_sync("cudaDeviceSynchronize")


def memGetInfo():
    total = _PROPERTIES["totalGlobalMem"]
    return total - _device.used_bytes() - _device.free_bytes(), total
