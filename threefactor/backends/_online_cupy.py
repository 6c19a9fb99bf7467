"""CUDA kernel of the online (two-point) rule's update, for weights on the GPU (CuPy).

Same contract as :func:`threefactor.backends._online_kernels.accumulate`::

    W[n, k] += Σ_r ut[n, r] · pre[r, k],      r < R = 2B (B (K + 1) with K delays)

One thread per synapse (n, k): it reads its row's R coefficients (the same for
the whole block, so they are broadcast from cache) and R pre-synaptic values
(coalesced along k), and reads and writes W[n, k] once; ΔW is never formed.  For
R ≥ ``BLAS_FROM`` the update is compute-bound and cuBLAS does it
(``w += ut @ pre``, one W-sized temporary).

CuPy is imported and the kernels compiled on first use, so this module imports
without CuPy.  ``tests/test_cuda_sources.py`` compiles both kernels with NVRTC (no
GPU needed); on a GPU it is tested by ``tests/test_online.py::test_cupy_update_matches_numpy``
(``@pytest.mark.gpu``), with small blocks and a small grid so that the strided
loops run on small inputs.
"""
from __future__ import annotations

import numpy as np

from threefactor.backends._cuda_source import LazyKernel, RawKernelSource

#: From this many rank-one terms on, use cuBLAS instead of the kernel.
BLAS_FROM = 64

_THREADS = 256
_MAX_GRID_Y = 65535

_SOURCE = r"""
extern "C" __global__
void online_accumulate_{name}({T}* __restrict__ w, const {T}* __restrict__ ut,
                              const {T}* __restrict__ pre, const int n_out, const int n_in,
                              const int r_all)
{{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n_in) return;
    for (int n = blockIdx.y; n < n_out; n += gridDim.y) {{
        const {T}* u = ut + (size_t)n * r_all;
        {T} acc = 0;
        for (int r = 0; r < r_all; ++r) {{
            acc += u[r] * pre[(size_t)r * n_in + k];
        }}
        w[(size_t)n * n_in + k] += acc;
    }}
}}
"""

_ACCUMULATE_F32 = LazyKernel(RawKernelSource(_SOURCE.format(name="f32", T="float"), "online_accumulate_f32"))
_ACCUMULATE_F64 = LazyKernel(RawKernelSource(_SOURCE.format(name="f64", T="double"), "online_accumulate_f64"))
_KERNELS = {np.dtype(np.float32): _ACCUMULATE_F32, np.dtype(np.float64): _ACCUMULATE_F64}

# The optimiser's SGD step with g = postᵀ pre (threefactor.nn.optim.SGD, PyTorch's order of operations),
# one thread per synapse: g from the R terms (post read as (R, n_out): no transposed copy), then
# d = sign·g + wd·w, buf = μ buf + d, w -= lr·buf; W and its momentum buffer read and written once.
_SGD_SOURCE = r"""
extern "C" __global__
void online_sgd_{name}({T}* __restrict__ w, {T}* __restrict__ buf, const {T}* __restrict__ post,
                       const {T}* __restrict__ pre, const int n_out, const int n_in, const int r_all,
                       const {T} sign, const {T} wd, const {T} mu, const {T} lr)
{{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n_in) return;
    for (int n = blockIdx.y; n < n_out; n += gridDim.y) {{
        {T} g = 0;
        for (int r = 0; r < r_all; ++r) {{
            g += post[(size_t)r * n_out + n] * pre[(size_t)r * n_in + k];
        }}
        const size_t i = (size_t)n * n_in + k;
        const {T} wi = w[i];
        const {T} d = sign * g + wd * wi;
        const {T} b = buf[i] * mu + d;
        buf[i] = b;
        w[i] = wi - lr * b;
    }}
}}
"""

_SGD_F32 = LazyKernel(RawKernelSource(_SGD_SOURCE.format(name="f32", T="float"), "online_sgd_f32"))
_SGD_F64 = LazyKernel(RawKernelSource(_SGD_SOURCE.format(name="f64", T="double"), "online_sgd_f64"))
_SGD_KERNELS = {np.dtype(np.float32): _SGD_F32, np.dtype(np.float64): _SGD_F64}


def sgd_low_rank(w, buf, post, pre, sign, wd, mu, lr):
    """The SGD step of w, buf with gradient g = postᵀ pre, in one kernel (ΔW never formed); False
    (nothing done) for R ≥ BLAS_FROM terms, where forming ΔW with cuBLAS is faster.

    w, buf : cupy (n_out, n_in), one float dtype, C-contiguous;  post (R, n_out), pre (R, n_in)."""
    import cupy
    dtype = np.dtype(w.dtype)
    n_out, n_in = w.shape
    r_all = post.shape[0]
    if r_all >= BLAS_FROM or dtype not in _SGD_KERNELS:
        return False
    post = cupy.ascontiguousarray(post, dtype=dtype)
    pre = cupy.ascontiguousarray(pre, dtype=dtype)
    t = dtype.type
    grid = ((n_in + _THREADS - 1) // _THREADS, min(n_out, _MAX_GRID_Y))
    _SGD_KERNELS[dtype].get()(grid, (_THREADS,), (w, buf, post, pre, np.int32(n_out), np.int32(n_in),
                                                  np.int32(r_all), t(sign), t(wd), t(mu), t(lr)))
    return True


def accumulate_kernel(dtype):
    """The RawKernel for ``dtype`` (float32 or float64), built on first use."""
    return _KERNELS[np.dtype(dtype)].get()


def accumulate(w, post, pre, lr):
    """W += lr · postᵀ pre in place on the GPU; returns w.

    Parameters
    ----------
    w : cupy array (n_out, n_in), float32 or float64, C-contiguous
    post : cupy array (R, n_out) post-synaptic terms × third factor × sign
    pre : cupy array (R, n_in) pre-synaptic activities
    lr : float
    """
    import cupy
    dtype = np.dtype(w.dtype)
    if dtype not in _KERNELS:
        raise TypeError(f"w must be float32 or float64 on the GPU, got dtype {dtype}")
    if not w.flags.c_contiguous:
        raise ValueError("w must be C-contiguous for the in-place update")
    n_out, n_in = w.shape
    r_all = post.shape[0]
    if post.shape != (r_all, n_out) or pre.shape != (r_all, n_in):
        raise ValueError(f"post {tuple(post.shape)} and pre {tuple(pre.shape)} do not match w {tuple(w.shape)}")
    ut = cupy.ascontiguousarray((post * lr).T, dtype=dtype)           # (n_out, R)
    pre = cupy.ascontiguousarray(pre, dtype=dtype)
    if r_all >= BLAS_FROM:
        w += ut @ pre
        return w
    grid = ((n_in + _THREADS - 1) // _THREADS, min(n_out, _MAX_GRID_Y))
    accumulate_kernel(dtype)(grid, (_THREADS,), (w, ut, pre, np.int32(n_out), np.int32(n_in), np.int32(r_all)))
    return w
