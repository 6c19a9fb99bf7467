"""threefactor.heap: glibc keeps a training step's megabyte buffers in the heap."""
import ctypes
import ctypes.util

import numpy as np
import pytest

from threefactor.heap import MMAP_THRESHOLD, keep_freed_memory


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mapped_bytes():
    """Bytes malloc holds in mmap'ed chunks right now (glibc >= 2.33), or skip."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    try:
        fn = libc.mallinfo2
    except AttributeError:
        pytest.skip("no glibc mallinfo2 here")
    fn.restype = _Mallinfo2
    return fn().hblkhd


def test_megabyte_buffers_come_from_the_heap_and_big_ones_are_still_mapped():
    if not keep_freed_memory():
        pytest.skip("malloc is not glibc's")
    before = _mapped_bytes()
    step_buffer = np.empty(4 << 20, dtype=np.uint8)          # the size of ΔW of a 1024 x 1024 layer
    step_buffer[::4096] = 1
    assert _mapped_bytes() == before
    dataset = np.empty(MMAP_THRESHOLD + (1 << 20), dtype=np.uint8)
    assert _mapped_bytes() >= before + dataset.nbytes
    del step_buffer, dataset


@pytest.mark.parametrize("kwargs", [dict(mmap_threshold=0), dict(trim_threshold=2 ** 31),
                                    dict(mmap_threshold=1.5), dict(trim_threshold=True)])
def test_bad_thresholds_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        keep_freed_memory(**kwargs)
