"""The CuPy backend: the same primitives as :mod:`threefactor.backends.numpy`, on an NVIDIA GPU.

GEMMs go to cuBLAS through ``cupy.matmul``; everything between two GEMMs is
one fused kernel (an ``ElementwiseKernel`` or a ``RawModule`` function),
declared as a module-level constant next to the method that launches it.
Each kernel's source is a plain record (:mod:`._cuda_source`) wrapped in a
``LazyKernel`` that builds it on first use, so this module imports without
CuPy or a GPU (:class:`CupyBackend` itself raises
:class:`~threefactor.backends.BackendUnavailable` then), and
``tests/test_cuda_sources.py`` compiles the same strings with NVRTC on a
machine without a GPU.

A whole update stays on the device: no host round trip and no
synchronisation (means are 0-d device arrays, never Python floats).  Arrays
keep their dtype (float32 or float64); float32 is what training uses
(``CupyBackend.default_dtype``).  GEMMs are strict IEEE float32 unless the
user sets ``CUPY_TF32=1``.

Shapes: x (m, n_in), w (n_out, n_in), z / a / fp (m, n_out), u / v (m, c),
K / A / Ky (m, m).
"""
from __future__ import annotations

import numpy as np

from threefactor.nn import dropout
from threefactor.nn.layers import softmax_cross_entropy as _softmax_cross_entropy
from threefactor.rule import conv
from threefactor.rule import objective
from threefactor.rule.activations import SELU_ALPHA, SELU_SCALE
from threefactor.rule.grouping import group_size
from threefactor.rule.rules import ACTIVATIONS, choice_error
from threefactor.backends import _conv_cupy, _online_cupy
from threefactor.backends._cuda_source import ElementwiseSource, LazyKernel, RawModuleSource
from threefactor.backends.base import Backend, BackendUnavailable
from threefactor.backends.numpy import NumpyBackend

try:  # the module must import without CuPy; CupyBackend() reports why it cannot run
    import cupy
except ImportError:  # pragma: no cover - exercised only where cupy is missing
    cupy = None
try:
    from cupy import cublas as cupy_cublas
except ImportError:  # pragma: no cover - no CuPy, or one without cupy.cublas: GEMMs instead of SYRK
    cupy_cublas = None

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

#: threads per block of the row kernels (a power of two; tests patch it smaller
#: so that the strided loops and the tree reduction run on small inputs).
ROW_THREADS = 128
#: warps per block of the group-statistics kernel (one warp per sample and group).
GROUP_WARPS = 8


def _function(module, name, dtype):
    """The ``name<T>`` instantiation of a templated RawModule kernel for ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype not in _CTYPE:
        raise TypeError(f"the cupy backend computes in float32 or float64, got dtype {dtype}")
    return module.function(f"{name}<{_CTYPE[dtype]}>")


# -- forward: z = f(a) and f'(a) in one pass (Eq. 1) ------------------------
_ACTIVATION_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}  # linear, relu, lrelu, selu
#: z = f(a), fp = f'(a) for activation code ``kind`` (linear, relu, lrelu, selu): the one CUDA text of
#: the activations, in the element-wise kernel below and in ``activate_group_stats``.
_ACTIVATION_BODY = f"""
    if (kind == 0) {{ z = a; fp = 1; }}
    else if (kind == 1) {{ z = a > 0 ? a : (T)0; fp = a > 0 ? (T)1 : (T)0; }}
    else if (kind == 2) {{ z = a > 0 ? a : slope * a; fp = a > 0 ? (T)1 : slope; }}
    else {{
        if (a > 0) {{ z = (T){SELU_SCALE!r} * a; fp = (T){SELU_SCALE!r}; }}
        else {{
            T e = (T){SELU_SCALE * SELU_ALPHA!r} * exp(a);
            z = e - (T){SELU_SCALE * SELU_ALPHA!r}; fp = e;
        }}
    }}
"""
_ACTIVATE = LazyKernel(ElementwiseSource("T a, T slope, int32 kind", "T z, T fp", _ACTIVATION_BODY,
                                         "threefactor_activate"))

# -- group statistics (Eq. 17-18), centred rows and the group pull-back (Eq. 43-44) --
_ROW_SOURCE = r"""
template<typename T>
__device__ T warp_sum(T x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x += __shfl_down_sync(0xffffffffu, x, offset);
    return x;
}

// One warp per row of g contiguous values (a sample's group):
// zhat = z - mean(z), u = (delta + sum zhat^2) / g        (Eq. 17)
template<typename T>
__global__ void group_stats(const T* z, T* zhat, T* u, const long long n_rows,
                            const int g, const T delta) {
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;            // the whole warp leaves together
    const T* zr = z + row * g;
    T* hr = zhat + row * g;
    T s = 0;
    for (int k = lane; k < g; k += 32) s += zr[k];
    s = warp_sum(s);
    const T mean = __shfl_sync(0xffffffffu, s, 0) / (T)g;
    T q = 0;
    for (int k = lane; k < g; k += 32) {
        const T d = zr[k] - mean;
        hr[k] = d;
        q += d * d;
    }
    q = warp_sum(q);
    if (lane == 0) u[row] = (delta + q) / (T)g;
}

template<typename T>
__device__ __forceinline__ void activation(const T a, const T slope, const int kind, T& z, T& fp) {
""" + _ACTIVATION_BODY + r"""}

// group_stats fused with the activation (forward_grouped): one warp per row of g pre-activations a;
// z = f(a), fp = f'(a), then zhat and u of z as in group_stats (z read back from this warp's own writes).
template<typename T>
__global__ void activate_group_stats(const T* a, T* z, T* fp, T* zhat, T* u, const long long n_rows,
                                     const int g, const T delta, const T slope, const int kind) {
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= n_rows) return;            // the whole warp leaves together
    const long long base = row * g;
    T s = 0;
    for (int k = lane; k < g; k += 32) {
        T zk, fk;
        activation(a[base + k], slope, kind, zk, fk);
        z[base + k] = zk;
        fp[base + k] = fk;
        s += zk;
    }
    s = warp_sum(s);
    const T mean = __shfl_sync(0xffffffffu, s, 0) / (T)g;
    T q = 0;
    for (int k = lane; k < g; k += 32) {      // the same lane wrote z[base + k] above
        const T d = z[base + k] - mean;
        zhat[base + k] = d;
        q += d * d;
    }
    q = warp_sum(q);
    if (lane == 0) u[row] = (delta + q) / (T)g;
}

// One block per sample row of c values (blockDim.x a power of two).
// mode 0: out = a^q - mean_c a^q                               (Eq. 18, q = 1 - p)
// mode 1: out = scale * (a - mean_c a) / b^q                   (Eq. 43-44, q = p)
template<typename T>
__global__ void row_centre(const T* a, const T* b, T* out, const int c, const T q,
                           const T scale, const int mode) {
    extern __shared__ __align__(8) unsigned char shared_raw[];
    T* part = reinterpret_cast<T*>(shared_raw);
    const long long base = (long long)blockIdx.x * c;
    T s = 0;
    for (int k = threadIdx.x; k < c; k += blockDim.x)
        s += mode == 0 ? pow(a[base + k], q) : a[base + k];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    const T mean = part[0] / (T)c;
    for (int k = threadIdx.x; k < c; k += blockDim.x) {
        if (mode == 0) out[base + k] = pow(a[base + k], q) - mean;
        else out[base + k] = scale * (a[base + k] - mean) / pow(b[base + k], q);
    }
}

// One block per row i of the (m, m) matrix A (blockDim.x a power of two), for the Laplacian:
// B = A with B_ii = 0, and rs_i = sum_{j != i} A_ij.  A_ii is never read: it multiplies v_i - v_i = 0.
template<typename T>
__global__ void off_diagonal(const T* A, T* B, T* rs, const int m) {
    extern __shared__ __align__(8) unsigned char shared_raw[];
    T* part = reinterpret_cast<T*>(shared_raw);
    const int i = blockIdx.x;
    const long long base = (long long)i * m;
    T s = 0;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        const T a = j == i ? (T)0 : A[base + j];
        B[base + j] = a;
        s += a;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) rs[i] = part[0];
}
"""
_ROWS = LazyKernel(RawModuleSource(
    _ROW_SOURCE,
    tuple(f"{k}<{t}>" for k in ("group_stats", "activate_group_stats", "row_centre", "off_diagonal")
          for t in ("float", "double"))))

# -- the means of the kernel matrices and the layer objective's value (Eq. 9), one launch --------
_OBJECTIVE_SOURCE = r"""
// Over the n entries of K and Ky: out[0] = mean(K), out[1] = mean(Ky) and
// out[2] = L = mean(K * (K - gamma Ky)) - mean(K) (mean(K) - gamma mean(Ky)) (objective.layer_objective).
// gridDim.x blocks of blockDim.x threads (a power of two) stride over the entries; each block sums its
// three partial sums in shared memory and writes them to partial[3 * block ...].  The last block to
// finish (an atomic ticket on *done after a __threadfence, so the other blocks' partials are visible)
// sums the partials in block order -- the same order whichever block is last, so the result repeats bit
// for bit -- writes out and resets *done to 0 for the next launch.  *done is one counter per device and
// stream (two of these kernels must not run at once on one counter; on one stream they never do).
template<typename T>
__device__ void block_sum3(T* sk, T* sy, T* sd, T a, T b, T c) {
    sk[threadIdx.x] = a; sy[threadIdx.x] = b; sd[threadIdx.x] = c;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            sk[threadIdx.x] += sk[threadIdx.x + half];
            sy[threadIdx.x] += sy[threadIdx.x + half];
            sd[threadIdx.x] += sd[threadIdx.x + half];
        }
        __syncthreads();
    }
}

template<typename T>
__global__ void kernel_stats(const T* __restrict__ K, const T* __restrict__ Ky, const long long n,
                             const T gamma, T* partial, unsigned int* done, T* __restrict__ out) {
    extern __shared__ __align__(8) unsigned char shared_raw[];
    T* sk = reinterpret_cast<T*>(shared_raw);
    T* sy = sk + blockDim.x;
    T* sd = sy + blockDim.x;
    __shared__ bool last;
    T a = 0, b = 0, c = 0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T k = K[i], y = Ky[i];
        a += k;
        b += y;
        c += k * (k - gamma * y);
    }
    block_sum3(sk, sy, sd, a, b, c);
    if (gridDim.x > 1) {
        if (threadIdx.x == 0) {
            volatile T* mine = partial + 3 * blockIdx.x;
            mine[0] = sk[0]; mine[1] = sy[0]; mine[2] = sd[0];
            __threadfence();
            last = atomicAdd(done, 1u) == gridDim.x - 1;
        }
        __syncthreads();
        if (!last) return;
        const volatile T* all = partial;
        a = 0; b = 0; c = 0;
        for (int j = threadIdx.x; j < (int)gridDim.x; j += blockDim.x) {
            a += all[3 * j]; b += all[3 * j + 1]; c += all[3 * j + 2];
        }
        block_sum3(sk, sy, sd, a, b, c);
    }
    if (threadIdx.x == 0) {
        const T kbar = sk[0] / (T)n, ybar = sy[0] / (T)n;
        out[0] = kbar;
        out[1] = ybar;
        out[2] = sd[0] / (T)n - kbar * (kbar - gamma * ybar);
        if (gridDim.x > 1) *done = 0u;
    }
}
"""
_OBJECTIVE = LazyKernel(RawModuleSource(_OBJECTIVE_SOURCE, ("kernel_stats<float>", "kernel_stats<double>")))
OBJECTIVE_THREADS = 512
#: Entries per thread the kernel aims at (it takes min(this many blocks, :data:`OBJECTIVE_BLOCKS_MAX`)):
#: m = 256 (65 536 entries) runs on 16 blocks, m = 1024 on 256 (it ran on one block, or on CuPy's
#: reductions -- four launches and 0.13-0.2 ms at m = 1024 on an H200 -- before).
OBJECTIVE_PER_THREAD = 8
OBJECTIVE_BLOCKS_MAX = 512
_DONE = {}      # (device id, stream) -> the kernel's zeroed uint32 ticket counter (one per stream:
                # launches on one stream run in order, so they never share a counter at the same time)


def _objective_blocks(n):
    per_block = OBJECTIVE_THREADS * OBJECTIVE_PER_THREAD
    return max(1, min(OBJECTIVE_BLOCKS_MAX, -(-n // per_block)))


# -- softmax cross-entropy of the output layer, one block (threefactor.nn.layers.softmax_cross_entropy) --
_XENT_SOURCE = r"""
// One block; thread t takes rows t, t + blockDim.x, ...  For each row: shifted = logits - max,
// e = exp(shifted), s = sum e, loss_i = log s - shifted[y], p = e / s, hit_i = (first argmax of p == y),
// dlogits = (p - onehot(y)) * inv_m.  Then loss = sum loss_i / m and correct = sum hit_i (tree sums).
template<typename T>
__global__ void softmax_xent(const T* __restrict__ logits, const long long* __restrict__ labels,
                             T* __restrict__ dlogits, T* __restrict__ loss, long long* __restrict__ correct,
                             const int m, const int k, const T inv_m) {
    extern __shared__ __align__(8) unsigned char shared_raw[];
    long long* hits = reinterpret_cast<long long*>(shared_raw);
    T* part = reinterpret_cast<T*>(hits + blockDim.x);
    T l = 0;
    long long c = 0;
    for (int r = threadIdx.x; r < m; r += blockDim.x) {
        const T* row = logits + (long long)r * k;
        T* d = dlogits + (long long)r * k;
        T mx = row[0];
        for (int j = 1; j < k; ++j) mx = row[j] > mx ? row[j] : mx;
        T s = 0;
        for (int j = 0; j < k; ++j) { const T e = exp(row[j] - mx); d[j] = e; s += e; }
        const int y = (int)labels[r];
        l += log(s) - (row[y] - mx);
        int best = 0;
        T top = -1;
        for (int j = 0; j < k; ++j) {
            const T pj = d[j] / s;
            if (pj > top) { top = pj; best = j; }
            d[j] = pj;
        }
        c += best == y;
        d[y] -= (T)1;
        for (int j = 0; j < k; ++j) d[j] *= inv_m;
    }
    part[threadIdx.x] = l;
    hits[threadIdx.x] = c;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            part[threadIdx.x] += part[threadIdx.x + half];
            hits[threadIdx.x] += hits[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        loss[0] = part[0] / (T)m;
        correct[0] = hits[0];
    }
}
"""
_XENT = LazyKernel(RawModuleSource(_XENT_SOURCE, ("softmax_xent<float>", "softmax_xent<double>")))
XENT_THREADS = 256


def softmax_cross_entropy(logits, labels):
    """(loss 0-d, dlogits (m, k), correct 0-d int64) of :func:`threefactor.nn.layers.softmax_cross_entropy`,
    one kernel (it was a dozen), no host sync; logits (m, k) float32/float64, labels (m,) integers."""
    logits = cupy.ascontiguousarray(logits)
    labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
    m, k = logits.shape
    dlogits = cupy.empty_like(logits)
    loss = cupy.empty((), dtype=logits.dtype)
    correct = cupy.empty((), dtype=cupy.int64)
    _function(_XENT, "softmax_xent", logits.dtype)(
        (1,), (XENT_THREADS,),
        (logits, labels, dlogits, loss, correct, np.int32(m), np.int32(k), logits.dtype.type(1.0 / m)),
        shared_mem=XENT_THREADS * (8 + logits.dtype.itemsize))
    return loss, dlogits, correct


# -- SGD with momentum in one pass (threefactor.nn.optim.SGD's arithmetic) --------------
_SGD = LazyKernel(ElementwiseSource(
    "T g, T sign, T wd, T mu, T lr", "T w, T buf",
    """
    const T d = sign * g + wd * w;
    const T b = buf * mu + d;
    buf = b;
    w = w - lr * b;
    """,
    "threefactor_sgd_step"))


def sgd_step(w, g, buf, sign, wd, mu, lr):
    """In place: buf = μ buf + (sign·g + wd·w); w -= lr·buf (one kernel; cupy arrays of one dtype)."""
    t = w.dtype.type
    _SGD(g, t(sign), t(wd), t(mu), t(lr), w, buf)


_DIVISIVE = LazyKernel(ElementwiseSource(
    "T zhat, T u, T p", "T r", "r = zhat / pow(u, p)", "threefactor_divisive_norm"))
_DIVISIVE_MASKED = LazyKernel(ElementwiseSource(
    "T zhat, T u, T p, T mask", "T r", "r = (zhat / pow(u, p)) * mask", "threefactor_divisive_norm_masked"))

# -- Gaussian kernel from the Gram matrix G = v vᵀ (Eq. 26) ----------------
_GAUSSIAN = LazyKernel(ElementwiseSource(
    "raw T G, int64 m, T neg_half_inv_s2", "T K",
    """
    const long long r = i / m, c = i % m;
    const long long hi = r > c ? r : c, lo = r > c ? c : r;   // read only G's lower triangle
    T d = G[r * m + r] + G[c * m + c] - 2 * G[hi * m + lo];
    K = r == c ? (T)1 : exp((d > 0 ? d : (T)0) * neg_half_inv_s2);
    """,
    "threefactor_gaussian_kernel"))

# -- A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b, 40) --------------------------------
_GAUSSIAN_WEIGHTS = LazyKernel(ElementwiseSource(
    "T K, T Ky, T mean_K, T mean_Ky, T gamma, T inv_m2", "T A",
    "A = ((T)2 * (K - mean_K) - gamma * (Ky - mean_Ky)) * K * inv_m2",
    "threefactor_gaussian_weights"))

# -- L_A v = diag(B·1) v - B v, B = A off its diagonal (Eq. 12, 40-42); B·1 and B from ``off_diagonal`` --
_LAPLACIAN = LazyKernel(ElementwiseSource(
    "T rowsum, T v, T Bv", "T out", "out = rowsum * v - Bv", "threefactor_laplacian"))

# -- post-synaptic terms (Eq. 41, 47-48) -----------------------------------------
_POST_PLAIN = LazyKernel(ElementwiseSource(
    "T neg_dz, T fp, T scale", "T post", "post = scale * neg_dz * fp", "threefactor_post_plain"))
_POST_GROUPED = LazyKernel(ElementwiseSource(
    "T zhat, T coef, T fp", "T post", "post = zhat * coef * fp", "threefactor_post_grouped"))

# -- centred cosine label kernel (Eq. 35) ------------------------------------------
_LABEL_COSINE = LazyKernel(ElementwiseSource(
    "raw int64 labels, int64 m, T off", "T Ky",
    "Ky = labels[i / m] == labels[i % m] ? (T)1 : off", "threefactor_label_cosine"))

# -- dropout keep mask from a seed (threefactor/nn/dropout.py: splitmix_keep is its reference) --
# unit i (C order) is kept iff the top KEEP_BITS bits of SplitMix64(seed + (i+1)γ) >= threshold
_KEEP_HASH = f"""
    unsigned long long h = seed + (unsigned long long)(i + 1) * {dropout.GOLDEN_GAMMA:#x}ull;
    h = (h ^ (h >> 30)) * {dropout.MIX1:#x}ull;
    h = (h ^ (h >> 27)) * {dropout.MIX2:#x}ull;
    h ^= h >> 31;
    const bool kept = (h >> {64 - dropout.KEEP_BITS}) >= threshold;
"""
_KEEP_SELECT = LazyKernel(ElementwiseSource(
    "uint64 seed, uint64 threshold, T on, T off", "T out",
    _KEEP_HASH + "    out = kept ? on : off;\n", "threefactor_keep_select"))
_KEEP_SELECT2 = LazyKernel(ElementwiseSource(
    "uint64 seed, uint64 threshold, T on1, T off1, T on2, T off2", "T out1, T out2",
    _KEEP_HASH + "    out1 = kept ? on1 : off1;\n    out2 = kept ? on2 : off2;\n", "threefactor_keep_select2"))


class CupyBackend(Backend):
    """The primitives of :class:`~threefactor.backends.numpy.NumpyBackend` on the GPU."""

    name = "cupy"
    #: Gram matrices by cuBLAS SYRK (one triangle, half the flops) instead of a GEMM.  Off: on an
    #: H200 (CuPy 14.2, CUDA 13) SYRK took 1.4-1.6x the GEMM's time at m = 256-1024 and 74x at
    #: m = 128, d = 131072 (benchmarks/profile_gpu.py's A/B, RESULTS.md "GPU").
    use_syrk = False
    default_dtype = np.float32

    def __init__(self):
        if cupy is None:
            from threefactor.install_hint import install_hint
            raise BackendUnavailable(f"cupy is not installed: {install_hint('gpu')}")
        self.xp = cupy

    # -- arrays ---------------------------------------------------------
    def asarray(self, a, dtype=None):
        """A device array; a host array is cast on the host and copied to the device once."""
        if isinstance(a, cupy.ndarray):
            return a if dtype is None else a.astype(dtype, copy=False)
        return cupy.asarray(np.asarray(a, dtype=dtype))

    def to_numpy(self, a):
        return cupy.asnumpy(a)

    def is_native(self, a):
        """Whether ``a`` is already a CuPy array."""
        return isinstance(a, cupy.ndarray)

    def synchronize(self):
        """Wait for the work queued on the current stream."""
        cupy.cuda.get_current_stream().synchronize()

    # -- primitives -----------------------------------------------------
    def keep_mask(self, rng, shape, p, dtype):
        """Dropout keep mask made on the device from one seed drawn from ``rng`` (no transfer,
        no sync): unit i is dropped iff the top 24 bits of SplitMix64(seed, i) < p·2^24."""
        return self.keep_select(rng, shape, p, dtype, ((1, 0),))[0]

    def scalars(self, values):
        """:meth:`NumpyBackend.scalars`: the 0-d device arrays stacked and read back at once."""
        values = [cupy.asarray(v) for v in values]
        return cupy.stack(values).astype(np.float64).get().reshape(-1) if values else np.zeros(0)

    def keep_select(self, rng, shape, p, dtype, pairs):
        """:meth:`NumpyBackend.keep_select` on the device: one seed from ``rng``, one kernel
        writing every array (at most two pairs), the units of :meth:`keep_mask`."""
        if len(pairs) not in (1, 2):
            raise ValueError(f"keep_select writes one or two arrays per draw, got {len(pairs)} pairs")
        t = np.dtype(dtype).type
        seed, threshold = dropout.draw_seed(rng), np.uint64(dropout.drop_threshold(p))
        outs = tuple(cupy.empty(shape, dtype=dtype) for _ in pairs)
        values = [t(v) for pair in pairs for v in pair]
        (_KEEP_SELECT if len(pairs) == 1 else _KEEP_SELECT2)(seed, threshold, *values, *outs)
        return outs

    def matmul(self, a, b, out=None):
        """Matrix product (cuBLAS GEMM), into ``out`` when given."""
        return cupy.matmul(a, b, out=out)

    def forward(self, x, w, activation, slope):
        """a = x wᵀ (cuBLAS), then z = f(a) and f'(a) in one kernel.  Returns (a, z, fp)."""
        if activation not in _ACTIVATION_CODE:
            raise choice_error("activation", activation, ACTIVATIONS)
        a = self.matmul(x, w.T)
        z, fp = _ACTIVATE(a, slope, _ACTIVATION_CODE[activation])
        return a, z, fp

    def group_stats(self, z, groups, p, delta):
        """ẑ (m, n), u (m, c), v (m, c) of Eq. 17-18 in two kernels (one warp per group)."""
        z = cupy.ascontiguousarray(z)
        zhat, u = self._group_rows("group_stats", z, groups, (), delta)
        return zhat, u, self._row_centre(u, u, 1.0 - p, 1.0, 0)

    def forward_grouped(self, x, w, activation, slope, groups, p, delta):
        """:meth:`forward` and :meth:`group_stats` (Eq. 1, 17-18) as one GEMM and two kernels: z, f'(a),
        ẑ and u from one warp per group (``activate_group_stats``), then v.  Returns (a, z, fp, ẑ, u, v)."""
        if activation not in _ACTIVATION_CODE:
            raise choice_error("activation", activation, ACTIVATIONS)
        a = cupy.ascontiguousarray(self.matmul(x, w.T))
        z, fp = cupy.empty_like(a), cupy.empty_like(a)
        t = a.dtype.type
        zhat, u = self._group_rows("activate_group_stats", a, groups, (z, fp), delta,
                                   (t(slope), np.int32(_ACTIVATION_CODE[activation])))
        return a, z, fp, zhat, u, self._row_centre(u, u, 1.0 - p, 1.0, 0)

    def _group_rows(self, name, src, groups, outs, delta, extra=()):
        """Launch ``name`` (group_stats or activate_group_stats), one warp per (sample, group) row of
        ``src`` (m, n) C-ordered; returns (ẑ, u)."""
        m, n = src.shape
        group_size(n, groups)
        zhat = cupy.empty_like(src)
        u = cupy.empty((m, groups), dtype=src.dtype)
        rows = m * groups
        _function(_ROWS, name, src.dtype)(
            ((rows + GROUP_WARPS - 1) // GROUP_WARPS,), (32 * GROUP_WARPS,),
            (src, *outs, zhat, u, np.int64(rows), np.int32(n // groups), src.dtype.type(delta), *extra))
        return zhat, u

    def _row_centre(self, a, b, q, scale, mode):
        """Launch ``row_centre`` (see its CUDA comment) on (m, c) arrays; one block per row."""
        m, c = a.shape
        out = cupy.empty_like(a)
        t = a.dtype.type
        _function(_ROWS, "row_centre", a.dtype)(
            (m,), (ROW_THREADS,), (a, b, out, np.int32(c), t(q), t(scale), np.int32(mode)),
            shared_mem=ROW_THREADS * a.dtype.itemsize)
        return out

    def divisive_norm(self, zhat, u, p, mask=None):
        """r = ẑ / u^p (Eq. 21), times the dropout ``mask`` if given: one kernel."""
        m, n = zhat.shape
        c = u.shape[1]
        groups = (zhat.reshape(m, c, n // c), u[:, :, None], p)
        if mask is None:
            return _DIVISIVE(*groups).reshape(m, n)
        return _DIVISIVE_MASKED(*groups, mask.reshape(m, c, n // c)).reshape(m, n)

    def gaussian_kernel(self, v, sigma):
        """K_ij = exp(-‖v_i - v_j‖² / 2σ²) (Eq. 26): the Gram matrix G = v vᵀ, one kernel.

        The kernel reads only G's lower triangle, so K is exactly symmetric, and G may come
        from SYRK (one triangle) when :attr:`use_syrk` is set.
        """
        m = v.shape[0]
        K = cupy.empty((m, m), dtype=v.dtype)
        return _GAUSSIAN(self.gram_lower(v), m, -0.5 / sigma ** 2, K)

    def gram_lower(self, v):
        """(m, m) C-ordered array whose lower triangle (diagonal included) is v vᵀ; the strict upper
        triangle is unspecified.  SYRK where CuPy has it for the dtype, else a GEMM."""
        if self.use_syrk and cupy_cublas is not None and v.dtype in _CTYPE and v.shape[0] > 0:
            m = v.shape[0]
            G = cupy.empty((m, m), dtype=v.dtype, order="F")
            cupy_cublas.syrk("N", cupy.ascontiguousarray(v), out=G, lower=False)
            return G.T             # the upper triangle of the F-ordered G is the lower one of Gᵀ (C order)
        return self.matmul(v, v.T)

    def gaussian_weights(self, K, Ky, gamma):
        """A = (2 k̊z - γ k̊y) ⊙ K / m² (Eq. 12b times σ²); the means stay on the device
        (both from the one ``kernel_stats`` launch), then one element-wise kernel."""
        m2 = K.shape[0] * K.shape[1]
        stats = self._kernel_stats(K, Ky, gamma)
        mean_K, mean_Ky = (K.mean(), Ky.mean()) if stats is None else (stats[0], stats[1])
        return _GAUSSIAN_WEIGHTS(K, Ky, mean_K, mean_Ky, gamma, 1.0 / m2)

    def _kernel_stats(self, K, Ky, gamma):
        """[mean K, mean Ky, L] as a device array from one launch of ``kernel_stats``, or None where
        that kernel does not apply (other dtypes or shapes: CuPy's reductions)."""
        if K.dtype not in _CTYPE or Ky.dtype != K.dtype or K.shape != Ky.shape:
            return None
        K, Ky = cupy.ascontiguousarray(K), cupy.ascontiguousarray(Ky)
        n = K.size
        blocks = _objective_blocks(n)
        work = cupy.empty(3 + 3 * blocks, dtype=K.dtype)       # out, then the blocks' partial sums
        key = (cupy.cuda.Device().id, cupy.cuda.get_current_stream().ptr)   # launches on one stream queue
        done = _DONE.get(key)
        if done is None:
            done = _DONE[key] = cupy.zeros(1, dtype=cupy.uint32)
        _function(_OBJECTIVE, "kernel_stats", K.dtype)(
            (blocks,), (OBJECTIVE_THREADS,),
            (K, Ky, np.int64(n), K.dtype.type(gamma), work[3:], done, work),
            shared_mem=3 * OBJECTIVE_THREADS * K.dtype.itemsize)
        return work[:3]

    def laplacian(self, A, v):
        """(L_A v)_i = Σ_{j≠i} A_ij (v_i - v_j) (Eq. 12, 40-42): one row kernel, one GEMM
        (m, m) × (m, d), one element-wise kernel; no host sync.

        A's diagonal is ignored, as in :meth:`NumpyBackend.laplacian`: it multiplies
        v_i - v_i = 0 and would only add cancellation error.  ``off_diagonal`` writes
        B = A with a zero diagonal and B·1 in one pass over A, so neither the row sums
        nor the GEMM B v ever see A_ii; then diag(B·1) v - B v.
        """
        A = cupy.ascontiguousarray(A)
        m = A.shape[0]
        B = cupy.empty_like(A)
        rowsum = cupy.empty((m, 1), dtype=A.dtype)
        _function(_ROWS, "off_diagonal", A.dtype)(
            (m,), (ROW_THREADS,), (A, B, rowsum, np.int32(A.shape[1])),
            shared_mem=ROW_THREADS * A.dtype.itemsize)
        return _LAPLACIAN(rowsum, v, self.matmul(B, v))

    def post_plain(self, neg_dz, fp, scale):
        """Post-synaptic term scale · (-dL/dz) ⊙ f'(a) (Eq. 41), one kernel."""
        return _POST_PLAIN(neg_dz, fp, scale)

    def post_grouped(self, neg_dv, zhat, u, fp, p, scale):
        """Post-synaptic term of the grouped rule (Eq. 47-48) in two kernels:
        coef = scale · 2(1-p)/g · (-dv_α + mean_α dv) / u_α^p, then ẑ ⊙ coef ⊙ f'."""
        m, n = zhat.shape
        c = u.shape[1]
        g = n // c
        coef = self._row_centre(cupy.ascontiguousarray(neg_dv), cupy.ascontiguousarray(u),
                                p, scale * 2.0 * (1 - p) / g, 1)
        post = _POST_GROUPED(zhat.reshape(m, c, g), coef[:, :, None], fp.reshape(m, c, g))
        return post.reshape(m, n)

    def hebbian(self, post, x, out=None):
        """ΔW = postᵀ x: the Hebbian product of post- and pre-synaptic terms, one cuBLAS GEMM (into ``out``)."""
        return self.matmul(post.T, x) if out is None else self.matmul(post.T, x, out=out)

    # -- conv layers: the CuPy kernels of backends/_conv_cupy.py; complex arrays (complex-step checks)
    # take the reference code of threefactor.rule.conv on cupy arrays
    def im2col(self, x, kh, kw, padding):
        """Patches as rows (m·Ho·Wo, kh·kw·C_in), one kernel (:func:`threefactor.rule.conv.im2col`)."""
        return _conv_cupy.im2col(x, kh, kw, padding)

    def col2im(self, cols, x_shape, kh, kw, padding):
        """Adjoint of :meth:`im2col` onto (m, C_in, H, W), one kernel."""
        return _conv_cupy.col2im(cols, x_shape, kh, kw, padding)

    def rows_to_nchw(self, t, m, ho, wo):
        """(m·Ho·Wo, C) or (m, Ho, Wo, C) -> contiguous (m, C, Ho, Wo), one tiled transpose kernel."""
        if cupy.iscomplexobj(t):
            return conv.rows_to_nchw(t, m, ho, wo, cupy)
        return _conv_cupy.rows_to_nchw(t, m, ho, wo)

    def max_pool_rows(self, z, *extra):
        """2×2 max pooling of channel-last z with winners (one kernel), and ``extra`` at them."""
        if cupy.iscomplexobj(z):
            return conv.max_pool_rows(z, cupy, *extra)
        pooled, idx = _conv_cupy.max_pool_rows(z)
        return pooled, idx, [conv.gather_rows(t, idx, cupy) if cupy.iscomplexobj(t)
                             else _conv_cupy.gather_rows(t, idx) for t in extra]

    def route_rows(self, g, idx, shape):
        """Pooled-unit terms back to their windows' winners, 0 elsewhere (one kernel)."""
        if cupy.iscomplexobj(g):
            return conv.route_rows(g, idx, shape, cupy)
        return _conv_cupy.route_rows(g, idx, shape)

    def layer_objective(self, K, Ky, gamma):
        """L (Eq. 9) as a 0-d device array: one kernel instead of a dozen reductions and ufuncs."""
        stats = self._kernel_stats(K, Ky, gamma)
        return objective.layer_objective(K, Ky, gamma) if stats is None else stats[2]

    def label_kernel(self, labels, n_classes, kind, dtype):
        """Centred label kernel (Eq. 35 / 36) from integer labels (m,), without a host sync."""
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        m = labels.shape[0]
        if kind == "cosine":
            Ky = cupy.empty((m, m), dtype=dtype)
            return _LABEL_COSINE(labels, m, -1.0 / (n_classes - 1), Ky)
        # Eq. 36 with class frequencies from a one-hot matrix (cupy.bincount would sync).
        onehot = (labels[:, None] == cupy.arange(n_classes)[None, :]).astype(dtype)
        freq = onehot.mean(axis=0)
        pl = onehot @ freq
        same = (labels[:, None] == labels[None, :]).astype(dtype)
        return same + (freq * freq).sum() - pl[:, None] - pl[None, :]

    # -- networks -------------------------------------------------------
    def softmax_cross_entropy(self, logits, labels):
        """(loss, dlogits, correct) of :func:`threefactor.nn.layers.softmax_cross_entropy`: one kernel
        for 2-D float32/float64 logits, else the reference on cupy arrays."""
        if logits.dtype in (np.float32, np.float64) and logits.ndim == 2:
            return softmax_cross_entropy(logits, labels)
        return _softmax_cross_entropy(logits, labels, cupy)

    def sgd_step(self, w, g, buf, sign, wd, mu, lr):
        """SGD with momentum in place: one kernel when w, g, buf are C-contiguous cupy arrays of one
        float dtype (the reference arithmetic, :meth:`NumpyBackend.sgd_step`), else in-place ufuncs."""
        arrays = (w, g, buf)
        if (all(isinstance(a, cupy.ndarray) and a.flags.c_contiguous and a.dtype == w.dtype for a in arrays)
                and w.dtype in (np.float32, np.float64)):
            sgd_step(w, g, buf, sign, wd, mu, lr)
            return
        NumpyBackend.sgd_step(w, g, buf, sign, wd, mu, lr)

    def sgd_low_rank_step(self, w, buf, post, pre, sign, wd, mu, lr):
        """The SGD step with g = postᵀ pre in one CUDA kernel
        (:func:`threefactor.backends._online_cupy.sgd_low_rank`); False where it does not apply."""
        if not (isinstance(w, cupy.ndarray) and isinstance(buf, cupy.ndarray) and w.ndim == 2
                and w.flags.c_contiguous and buf.flags.c_contiguous and buf.dtype == w.dtype
                and post.shape[1:] == w.shape[:1] and pre.shape[1:] == w.shape[1:]):
            return False
        from threefactor.backends import _online_cupy
        return _online_cupy.sgd_low_rank(w, buf, post, pre, sign, wd, mu, lr)

    # -- the online rule ------------------------------------------------
    def accumulate(self, w, post, pre, lr):
        """W += lr · postᵀ pre in place: one thread per synapse, or cuBLAS for many rank-one terms
        (:mod:`threefactor.backends._online_cupy`)."""
        return _online_cupy.accumulate(w, post, pre, lr)

    # -- measuring ------------------------------------------------------
    def device_times(self, fn, n_repeat, n_warmup, max_duration):
        """GPU times (CUDA events) of ``fn()`` from ``cupyx.profiler.benchmark``."""
        from cupyx.profiler import benchmark
        res = benchmark(fn, n_repeat=n_repeat, n_warmup=n_warmup, max_duration=max_duration)
        return list(np.asarray(res.gpu_times)[0])

    def memory_growth(self, fn):
        """(growth of CuPy's default memory pool during one ``fn()``, method)."""
        pool = cupy.get_default_memory_pool()
        self.synchronize()
        pool.free_all_blocks()
        before = pool.total_bytes()
        fn()
        self.synchronize()
        return int(pool.total_bytes() - before), "cupy memory pool growth"

    def graph_call(self, fn):
        """``fn`` captured once into a CUDA graph (stream capture); a callable replaying it.

        Shows what the work costs without Python's per-kernel launch overhead.  Warm-up runs on the
        capture stream first, so the memory pool needs no new allocation while capturing."""
        stream = cupy.cuda.Stream(non_blocking=False)
        with stream:
            fn()
            fn()
            stream.synchronize()
            stream.begin_capture()
            try:
                fn()
            finally:
                graph = stream.end_capture()
        return graph.launch


def gpu_count():
    """Number of GPUs CuPy sees (0 without cupy, a driver or a device)."""
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return 0


def gpu_info():
    """Name, memory and CUDA versions of GPU 0 through CuPy, or ``None`` without one."""
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return {"name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_gib": round(props["totalGlobalMem"] / 2 ** 30, 1),
                "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
                "cuda_driver": cupy.cuda.runtime.driverGetVersion()}
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return None
