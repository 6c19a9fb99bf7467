"""threefactor.heap: glibc keeps a training step's megabyte buffers in the heap."""
import ctypes
import ctypes.util
import os
import subprocess
import sys

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


def _mapped_growth(tune):
    """In a fresh process (the heap of this one depends on earlier tests): bytes mmap'ed for a 4 MB
    buffer and for one above the threshold, with or without :func:`keep_freed_memory`."""
    code = f"""
import numpy as np, test_heap
from threefactor.heap import MMAP_THRESHOLD, keep_freed_memory
if {tune!r} and not keep_freed_memory():
    raise SystemExit(3)
before = test_heap._mapped_bytes()
step = np.empty(4 << 20, dtype=np.uint8); step[::4096] = 1
mid = test_heap._mapped_bytes()
big = np.empty(MMAP_THRESHOLD + (1 << 20), dtype=np.uint8)
print(mid - before, test_heap._mapped_bytes() - mid)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(__file__))
    if out.returncode == 3:
        pytest.skip("malloc is not glibc's")
    assert out.returncode == 0, out.stderr
    return [int(v) for v in out.stdout.split()]


def test_megabyte_buffers_come_from_the_heap_and_big_ones_are_still_mapped():
    _mapped_bytes()                                           # skips without mallinfo2
    step, big = _mapped_growth(True)
    assert step == 0 and big >= MMAP_THRESHOLD
    step, _ = _mapped_growth(False)
    assert step >= 4 << 20                                    # glibc's default maps it: the test can fail


@pytest.mark.parametrize("kwargs", [dict(mmap_threshold=0), dict(trim_threshold=2 ** 31),
                                    dict(mmap_threshold=1.5), dict(trim_threshold=True)])
def test_bad_thresholds_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        keep_freed_memory(**kwargs)
