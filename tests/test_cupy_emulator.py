"""The CuPy emulator proves itself: kernels give the right answers, and GPU mistakes are caught.

GPU-marked and run only on the emulator (``THREEFACTOR_EMULATE_CUPY=1``, as
``tests/test_cupy_emulated.py`` does); skipped on a real GPU and without the emulator.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import cupy_emulator

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy_emulator.active(),
                                 reason="tests of the CuPy emulator itself: run with THREEFACTOR_EMULATE_CUPY=1")]

if cupy_emulator.active():
    import cupy as cp
    from cupy.cuda.driver import CUDADriverError
    from cupy.cuda.runtime import CUDARuntimeError


# -- raw kernels: barriers, shuffles, shared memory -------------------------------------------

_BLOCK_SUMS = r"""
extern "C" __global__ void block_sums(const float* x, float* out, const int n) {
    extern __shared__ float warp_part[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    float s = i < n ? x[i] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1)
        s += __shfl_down_sync(0xffffffffu, s, offset);
    if (threadIdx.x % 32 == 0) warp_part[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < (int)(blockDim.x / 32); ++w) t += warp_part[w];
        out[blockIdx.x] = t;
    }
}
"""

_TREE_SUM = r"""
extern "C" __global__ void tree_sum(const double* x, double* out, const int sync) {
    extern __shared__ __align__(8) unsigned char raw[];
    double* part = reinterpret_cast<double*>(raw);
    part[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        if (sync) __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}
"""

_BROKEN = r"""
extern "C" __global__ void divergent_barriers(float* x) {
    if (threadIdx.x < 16) {
        __syncthreads();
        x[threadIdx.x] = 1.0f;
    } else {
        x[threadIdx.x] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);
    }
}

extern "C" __global__ void shuffle_after_exit(float* x) {
    if (threadIdx.x >= 16) return;
    x[threadIdx.x] = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);
}

extern "C" __global__ void write_one_past(float* x, const int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) x[i] = 2.0f;
}

extern "C" __global__ void read_one_past(const float* x, float* y, const int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

extern "C" __global__ void spin(const long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


def test_block_reduction_with_shuffles_and_shared_memory():
    x = np.arange(1000, dtype=np.float32)
    out = cp.empty(4, dtype=cp.float32)
    kernel = cp.RawKernel(_BLOCK_SUMS, "block_sums")
    kernel((4,), (256,), (cp.asarray(x), out, np.int32(1000)), shared_mem=8 * 4)
    np.testing.assert_array_equal(cp.asnumpy(out), np.add.reduceat(x, [0, 256, 512, 768]))


def test_a_missing_syncthreads_gives_a_wrong_sum(monkeypatch):
    """A thread runs to its next barrier before others run: a missing barrier reads stale values."""
    monkeypatch.setenv("THREEFACTOR_CUPY_EMULATOR_SCHEDULE", "forward")
    x = np.random.default_rng(0).normal(size=(3, 64))
    module = cp.RawModule(code=_TREE_SUM)
    tree_sum = module.get_function("tree_sum")
    got = {}
    for sync in (1, 0):
        out = cp.empty(3, dtype=cp.float64)
        tree_sum((3,), (64,), (cp.asarray(x), out, np.int32(sync)), shared_mem=64 * 8)
        got[sync] = cp.asnumpy(out)
    np.testing.assert_allclose(got[1], x.sum(axis=1), rtol=1e-12)
    assert not np.allclose(got[0], x.sum(axis=1))


def test_divergent_barriers_and_shuffles_with_exited_lanes_fail():
    module = cp.RawModule(code=_BROKEN)
    x = cp.zeros(32, dtype=cp.float32)
    with pytest.raises(cp.KernelFault, match="deadlock"):
        module.get_function("divergent_barriers")((1,), (32,), (x,))
    with pytest.raises(cp.KernelFault, match="lane 16 has already exited"):
        module.get_function("shuffle_after_exit")((1,), (32,), (x,))


def test_out_of_bounds_pointer_accesses_are_seen():
    module = cp.RawModule(code=_BROKEN)
    x = cp.zeros(100, dtype=cp.float32)
    with pytest.raises(cp.KernelFault, match="up to 0 bytes before its start and up to 4 bytes past its end"):
        module.get_function("write_one_past")((1,), (128,), (x, np.int32(100)))
    y = cp.zeros(100, dtype=cp.float32)
    module.get_function("read_one_past")((1,), (128,), (cp.arange(100, dtype=cp.float32), y, np.int32(100)))
    host = cp.asnumpy(y)
    np.testing.assert_array_equal(host[:99], np.arange(1, 100))
    assert np.isnan(host[99])                       # the guard zone behind the array


def test_arguments_and_launches_are_checked_like_a_gpu_would_need():
    kernel = cp.RawKernel(_BLOCK_SUMS, "block_sums")
    x, out = cp.zeros(64, dtype=cp.float32), cp.zeros(1, dtype=cp.float32)
    bad = [((x, out), TypeError, "takes 3 arguments, 2 given"),
           ((x, out, 64), TypeError, r"passed as int64 \(8 bytes\) but the parameter is int32"),
           ((x, out, np.float32(64)), TypeError, "float32.*parameter is int32"),
           ((x.astype(cp.float64), out, np.int32(64)), TypeError, "float64 array for a float32 pointer"),
           ((x, np.float32(0), np.int32(64)), TypeError, "scalar for a float32 pointer"),
           ((x, out, cp.asarray(np.int32(64))), TypeError, "cupy.ndarray for a int32 value"),
           ((x, out, np.ones(1, np.int32)), TypeError, "Unsupported type"),
           ((cp.zeros((8, 16), dtype=cp.float32).T, out, np.int32(64)), ValueError, "non-C-contiguous")]
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            kernel((1,), (64,), args, shared_mem=8)
    with pytest.raises(cp.KernelFault, match="wrote byte 4 of dynamic shared memory, past the 4 bytes"):
        kernel((1,), (64,), (x, out, np.int32(64)), shared_mem=4)      # two warps need 8 bytes
    with pytest.raises(TypeError, match="'grid' has incorrect type"):
        kernel(1, (64,), (x, out, np.int32(64)))
    for grid, block, shared in (((1,), (2048,), 0), ((1,), (64, 1, 65), 0), ((1, 70000), (64,), 0),
                                ((1,), (64,), 64 * 1024)):
        with pytest.raises(CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
            kernel(grid, block, (x, out, np.int32(64)), shared_mem=shared)
    with pytest.raises(CUDADriverError, match="CUDA_ERROR_NOT_FOUND"):
        cp.RawKernel(_BLOCK_SUMS, "block_sum")((1,), (64,), (x, out, np.int32(64)))


def test_a_spinning_kernel_keeps_the_device_busy_until_the_host_synchronises():
    spin = cp.RawModule(code=_BROKEN).get_function("spin")
    stream = cp.cuda.get_current_stream()
    n = cp.sync_count()
    spin((1,), (1,), (np.int64(3 * 10 ** 8),))      # 0.3 s at the virtual 1 GHz
    assert not stream.done
    t = time.perf_counter()
    stream.synchronize()
    assert time.perf_counter() - t > 0.2 and stream.done
    assert cp.sync_log(n) == ["Stream.synchronize()"]


# -- ElementwiseKernel: CuPy's rules --------------------------------------------------------

def test_elementwise_broadcasts_casts_scalars_and_allocates_outputs():
    axpy = cp.ElementwiseKernel("T x, T y, float32 a", "T z", "z = x * a + y", "emulator_axpy")
    x, y = np.arange(3.0).reshape(3, 1), np.arange(4.0)
    z = axpy(cp.asarray(x), cp.asarray(y), 2.5)
    assert z.shape == (3, 4) and z.dtype == np.float64
    np.testing.assert_array_equal(cp.asnumpy(z), x * np.float32(2.5) + y)
    xt = cp.asarray(np.arange(12.0).reshape(3, 4)).T                    # a strided input
    np.testing.assert_array_equal(cp.asnumpy(axpy(xt, cp.asarray(y[:3]), 1)), np.arange(12.0).reshape(3, 4).T + y[:3])


def test_elementwise_raw_arrays_loop_index_and_size():
    rev = cp.ElementwiseKernel("raw T x", "T y", "y = x[_ind.size() - 1 - i]", "emulator_reverse")
    y = cp.empty(5, dtype=cp.int64)
    rev(cp.arange(5), y)
    np.testing.assert_array_equal(cp.asnumpy(y), [4, 3, 2, 1, 0])
    double = cp.ElementwiseKernel("raw int64 a", "raw int64 b", "b[i] = 2 * a[i]", "emulator_double")
    b = cp.zeros(6, dtype=cp.int64)
    double(cp.arange(6), b, size=3)
    np.testing.assert_array_equal(cp.asnumpy(b), [0, 2, 4, 0, 0, 0])
    past = cp.ElementwiseKernel("raw T x", "T y", "y = x[i + 1]", "emulator_past")
    with pytest.raises(CUDARuntimeError, match="raw array 'x' of size 4 read at index 4"):
        past(cp.arange(4.0), cp.empty(4))


def test_elementwise_argument_errors_are_cupys():
    k = cp.ElementwiseKernel("T x, float64 s", "T z", "z = x * s", "emulator_scale")
    a = cp.ones(3, dtype=cp.float32)
    cases = [((a,), TypeError, "Wrong number of arguments"),
             ((np.ones(3), 1.0), TypeError, "Unsupported type"),
             ((a, cp.ones(3, dtype=cp.float32)), TypeError, "Type is mismatched"),
             ((a, 1.0, cp.empty(3, dtype=cp.float64)), TypeError, "Type is mismatched"),
             ((cp.ones((2, 3), dtype=cp.float32), 1.0, cp.empty(3, dtype=cp.float32)), ValueError,
              "Out shape is mismatched"),
             ((a, 1.0, cp.empty(4, dtype=cp.float32)), ValueError, "operands could not be broadcast")]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            k(*args)
    raw_only = cp.ElementwiseKernel("raw T x", "T y", "y = x[i]", "emulator_raw_only")
    with pytest.raises(ValueError, match="Loop size is undecided"):
        raw_only(cp.ones(3))
    with pytest.raises(ValueError, match="'size' can be used only if all of the ndarray are 'raw'"):
        k(a, 1.0, size=3)


def test_a_collection_inside_the_pool_lock_does_not_deadlock():
    """Freeing a device array runs its finalizer; when a garbage collection starts inside the pool's
    locked section (a dict insert can start one), that finalizer takes the same lock on the same
    thread: it must be reentrant (a plain lock hung a CI run)."""
    import gc
    import threading
    from cupy._emu import device

    def collect_while_locked():
        junk = [cp.zeros(4) for _ in range(3)]
        with device._lock:
            del junk[:]
            gc.collect()

    t = threading.Thread(target=collect_while_locked, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "the emulator's memory pool deadlocked"


def test_new_device_memory_is_not_zero():
    """``empty`` memory is NaN (floats), as stale device memory would be: unwritten outputs show."""
    half = cp.ElementwiseKernel("T x", "T y", "if (i % 2 == 0) y = x", "emulator_half")
    y = cp.asnumpy(half(cp.ones(4)))
    assert np.array_equal(y[::2], [1, 1]) and np.isnan(y[1::2]).all()


# -- device arrays ------------------------------------------------------------------------------

def test_device_arrays_stay_on_the_device():
    a = cp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(3) * a
    with pytest.raises(TypeError, match="incorrect type"):
        cp.ascontiguousarray(np.ones(3))
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        a[0] = np.ones(3)
    host = np.arange(4)                          # CuPy's stack/concatenate/expand_dims take device arrays only
    for bad in (lambda: cp.stack([host.min(), host.max()]), lambda: cp.concatenate([a.ravel(), host]),
                lambda: cp.expand_dims(host.max(), 0), lambda: cp.stack([a[0], np.float64(1.0)])):
        with pytest.raises(TypeError, match="incorrect type"):
            bad()
    assert cp.stack([a.min(), a.max()]).shape == (2,)
    total = a.sum()
    assert type(total) is cp.ndarray and total.shape == () and type(a[0, 1]) is cp.ndarray
    assert type(np.exp(a)) is cp.ndarray and type(np.sum(a, axis=0)) is cp.ndarray
    assert cp.asarray(a) is a and a.astype(a.dtype, copy=False) is a
    n = cp.sync_count()
    assert float(total) == 15.0 and cp.sync_log(n) == ["float(ndarray)"]
