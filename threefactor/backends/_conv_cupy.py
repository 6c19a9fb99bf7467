"""CuPy kernels of the conv layer's array operations (see :mod:`threefactor.rule.conv`).

Each operation of :mod:`threefactor.rule.conv` that would otherwise take several
strided copies is one ``ElementwiseKernel`` over its *output* (one thread per
output element, no atomics, so results are deterministic and bit-equal to the
numpy reference):

``im2col``         cols (m·Ho·Wo, kh·kw·C_in)   from x (m, C_in, H, W)
``col2im``         x (m, C_in, H, W)             summing the kh·kw rows that saw each pixel
``max_pool_rows``  pooled, winner (m, H//2, W//2, C)  first maximum of each 2×2 window
``gather_rows``    (m, H//2, W//2, C)            t at each window's winner
``route_rows``     (m, H, W, C)                   g at the winners, 0 elsewhere
``rows_to_nchw``   (m, C, Ho, Wo)                 from channel-last rows (m·Ho·Wo, C)

(pooling is channel-last, the layout the forward GEMM writes).  ``im2col`` and
``rows_to_nchw`` move data between the two layouts, so one side of a plain
one-thread-per-element copy would be strided (a different channel plane per
thread); they are instead ``RawModule`` kernels that pass 32×32 tiles through
shared memory, reading and writing along the contiguous axis of each side
(the profile of the VGG step on an H200 had the element-wise ``im2col`` at
2.3 ms of 14.7 ms).

The column order is (dy, dx, c) with c fastest, exactly as in
:func:`threefactor.rule.conv.im2col`.  Kernels are built lazily from their
:mod:`._cuda_source` records (compiled without a GPU by
``tests/test_cuda_sources.py``), so this module imports without CuPy;
:mod:`threefactor.rule.conv` calls it only for cupy arrays.
The GEMMs themselves (forward and update) go through the backend's cuBLAS
``matmul`` / ``hebbian``.
"""
from __future__ import annotations

try:  # importable without CuPy: only the functions need it
    import cupy
except ImportError:  # pragma: no cover - exercised only where cupy is missing
    cupy = None

import numpy as np

from threefactor.backends._cuda_source import ElementwiseSource, LazyKernel, RawModuleSource

_GEOMETRY = "int32 C, int32 H, int32 W, int32 Ho, int32 Wo, int32 kh, int32 kw, int32 pad"

# cols[r, (dy*kw + dx)*C + c] = x[n, c, oh + dy - pad, ow + dx - pad] (0 outside), r = (n*Ho + oh)*Wo + ow
_IM2COL = LazyKernel(ElementwiseSource(
    "raw T x, " + _GEOMETRY, "T cols",
    """
    long long e = i;
    const int c = e % C;   e /= C;
    const int dx = e % kw; e /= kw;
    const int dy = e % kh; e /= kh;
    const int ow = e % Wo; e /= Wo;
    const int oh = e % Ho;
    const long long n = e / Ho;
    const int iy = oh + dy - pad, ix = ow + dx - pad;
    cols = (iy >= 0 && iy < H && ix >= 0 && ix < W)
        ? x[((n * C + c) * H + iy) * (long long)W + ix] : (T)0;
    """,
    "threefactor_im2col"))

# x[n, c, iy, ix] = sum over (dy, dx) with a valid output position of cols[(n, oh, ow), (dy, dx, c)]
_COL2IM = LazyKernel(ElementwiseSource(
    "raw T cols, " + _GEOMETRY, "T x",
    """
    long long e = i;
    const int ix = e % W; e /= W;
    const int iy = e % H; e /= H;
    const int c = e % C;
    const long long n = e / C;
    const long long K = (long long)kh * kw * C;
    T s = 0;
    for (int dy = 0; dy < kh; ++dy) {
        const int oh = iy + pad - dy;
        if (oh < 0 || oh >= Ho) continue;
        for (int dx = 0; dx < kw; ++dx) {
            const int ow = ix + pad - dx;
            if (ow < 0 || ow >= Wo) continue;
            s += cols[((n * Ho + oh) * Wo + ow) * K + (dy * kw + dx) * C + c];
        }
    }
    x = s;
    """,
    "threefactor_col2im"))

# (n, py, px, c) of the pooled unit i, channel-last (m, H2, W2, C): the start of the pooling kernels' bodies
_POOLED_UNIT = """
    long long e = i;
    const int c = e % C;   e /= C;
    const int px = e % W2; e /= W2;
    const int py = e % H2;
    const long long n = e / H2;"""

# Pooling works channel-last, on z (m, H, W, C) contiguous:
# pooled[n, py, px, c] = max of the 2x2 window, winner = dy*2 + dx of its first maximum
_MAXPOOL = LazyKernel(ElementwiseSource(
    "raw T z, int32 H, int32 W, int32 H2, int32 W2, int32 C", "T pooled, int8 winner",
    _POOLED_UNIT + """
    const long long row = (long long)W * C;
    const long long b = ((n * H + 2 * py) * (long long)W + 2 * px) * C + c;
    T best = z[b];
    signed char k = 0;
    if (z[b + C] > best) { best = z[b + C]; k = 1; }
    if (z[b + row] > best) { best = z[b + row]; k = 2; }
    if (z[b + row + C] > best) { best = z[b + row + C]; k = 3; }
    pooled = best;
    winner = k;
    """,
    "threefactor_maxpool2x2_rows"))

# out[n, y, x, c] = g[n, y/2, x/2, c] if (y, x) won its window, else 0
_ROUTE = LazyKernel(ElementwiseSource(
    "raw T g, raw int8 winner, int32 H, int32 W, int32 H2, int32 W2, int32 C", "T out",
    """
    long long e = i;
    const int c = e % C;  e /= C;
    const int x = e % W;  e /= W;
    const int y = e % H;
    const long long n = e / H;
    const int py = y / 2, px = x / 2;
    T v = 0;
    if (py < H2 && px < W2) {
        const long long j = ((n * H2 + py) * (long long)W2 + px) * C + c;
        if ((int)winner[j] == (y % 2) * 2 + x % 2) v = g[j];
    }
    out = v;
    """,
    "threefactor_pool_route_rows"))

# t (m, H, W, C) at each window's winner: out[n, py, px, c] = t[n, 2py + j/2, 2px + j%2, c], j = winner
_GATHER = LazyKernel(ElementwiseSource(
    "raw T t, int8 winner, int32 H, int32 W, int32 H2, int32 W2, int32 C", "T out",
    _POOLED_UNIT + """
    const int j = (int)winner;
    out = t[((n * H + 2 * py + j / 2) * (long long)W + 2 * px + j % 2) * C + c];
    """,
    "threefactor_pool_gather_rows"))

_TILE_SOURCE = r"""
// Both kernels move one 32x32 tile of (position, channel) per block through shared memory;
// blockDim = (32, TILE_ROWS); blockIdx.x enumerates (channel tile, position tile, [offset,] sample).
#define TILE_ROWS 8

// cols[n*P + p, off*C + c] = x[n, c, oh + dy - pad, ow + dx - pad] (0 outside the image),
// p = oh*Wo + ow, off = dy*kw + dx: loads run along p (contiguous in x), stores along c
// (contiguous in cols).  Each block does `per` consecutive offsets of its tile (per divides kh*kw).
template<typename T>
__global__ void im2col_tiled(const T* __restrict__ x, T* __restrict__ cols, const int C, const int H,
                             const int W, const int Wo, const int P, const int kh, const int kw,
                             const int pad, const int c_tiles, const int p_tiles, const int per) {
    __shared__ T tile[32][33];
    const int groups = kh * kw / per;
    long long b = blockIdx.x;
    const int ct = (int)(b % c_tiles); b /= c_tiles;
    const int pt = (int)(b % p_tiles); b /= p_tiles;
    const int first = (int)(b % groups) * per;
    const long long n = b / groups;
    const int c0 = ct * 32, p0 = pt * 32, tx = threadIdx.x;
    const int p = p0 + tx;
    const int oy = p / Wo - pad, ox = p % Wo - pad;
    const long long K = (long long)kh * kw * C;
    const int c = c0 + tx;
    for (int off = first; off < first + per; ++off) {
        const int iy = oy + off / kw, ix = ox + off % kw;
        const bool inside = p < P && iy >= 0 && iy < H && ix >= 0 && ix < W;
        for (int k = threadIdx.y; k < 32; k += TILE_ROWS) {
            const int ch = c0 + k;
            tile[k][tx] = (inside && ch < C) ? x[((n * C + ch) * H + iy) * (long long)W + ix] : (T)0;
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += TILE_ROWS) {
            const int q = p0 + k;
            if (q < P && c < C) cols[(n * P + q) * K + (long long)off * C + c] = tile[tx][k];
        }
        __syncthreads();   // the tile is refilled by the next offset
    }
}

// out[n, c, p] = t[n*P + p, c]: channel-last rows (m*P, C) to (m, C, P); loads along c, stores along p.
template<typename T>
__global__ void rows_to_nchw(const T* __restrict__ t, T* __restrict__ out, const int P, const int C,
                             const int c_tiles, const int p_tiles) {
    __shared__ T tile[32][33];
    long long b = blockIdx.x;
    const int ct = (int)(b % c_tiles); b /= c_tiles;
    const int pt = (int)(b % p_tiles);
    const long long n = b / p_tiles;
    const int c0 = ct * 32, p0 = pt * 32, tx = threadIdx.x;
    for (int k = threadIdx.y; k < 32; k += TILE_ROWS) {
        const int p = p0 + k, c = c0 + tx;
        if (p < P && c < C) tile[k][tx] = t[(n * P + p) * C + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += TILE_ROWS) {
        const int c = c0 + k, p = p0 + tx;
        if (p < P && c < C) out[(n * C + c) * P + p] = tile[tx][k];
    }
}
"""
_TILES = LazyKernel(RawModuleSource(
    _TILE_SOURCE, tuple(f"{k}<{t}>" for k in ("im2col_tiled", "rows_to_nchw") for t in ("float", "double"))))
_TILE_BLOCK = (32, 8)
#: True: one block copies its (position, channel) tile for every kernel offset (kh·kw times the
#: work per block, kh·kw times fewer blocks); False: one offset per block.  On an H200 the
#: first took 0.60-0.64x the time of the second on the VGG net's layers (profile_gpu.py's A/B).
IM2COL_ALL_OFFSETS = True
_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _tiled(name, dtype):
    """The ``name<T>`` instantiation of a tile kernel, or None for a dtype it has none for (complex)."""
    ctype = _CTYPE.get(np.dtype(dtype))
    return None if ctype is None else _TILES.function(f"{name}<{ctype}>")


def _tiles(n):
    return (n + 31) // 32


def im2col(x, kh, kw, padding):
    """(m·Ho·Wo, kh·kw·C_in) patches of x (m, C_in, H, W); see :func:`threefactor.rule.conv.im2col`."""
    x = cupy.ascontiguousarray(x)
    m, c, h, w = x.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    cols = cupy.empty((m * ho * wo, kh * kw * c), dtype=x.dtype)
    fn = _tiled("im2col_tiled", x.dtype)
    if fn is None or cols.size == 0:
        _IM2COL(x, c, h, w, ho, wo, kh, kw, padding, cols)
        return cols
    c_tiles, p_tiles = _tiles(c), _tiles(ho * wo)
    per = kh * kw if IM2COL_ALL_OFFSETS else 1
    i32 = np.int32
    fn((c_tiles * p_tiles * (kh * kw // per) * m,), _TILE_BLOCK,
       (x, cols, i32(c), i32(h), i32(w), i32(wo), i32(ho * wo), i32(kh), i32(kw), i32(padding),
        i32(c_tiles), i32(p_tiles), i32(per)))
    return cols


def rows_to_nchw(t, m, ho, wo):
    """(m·Ho·Wo, C) or (m, Ho, Wo, C) channel-last -> (m, C, Ho, Wo) contiguous; see
    :func:`threefactor.rule.conv.rows_to_nchw`."""
    t = cupy.ascontiguousarray(t)
    c = t.size // (m * ho * wo) if t.size else t.shape[-1]
    out = cupy.empty((m, c, ho, wo), dtype=t.dtype)
    fn = _tiled("rows_to_nchw", t.dtype)
    if fn is None or out.size == 0:
        out[...] = t.reshape(m, ho, wo, c).transpose(0, 3, 1, 2)
        return out
    c_tiles, p_tiles = _tiles(c), _tiles(ho * wo)
    fn((c_tiles * p_tiles * m,), _TILE_BLOCK,
       (t, out, np.int32(ho * wo), np.int32(c), np.int32(c_tiles), np.int32(p_tiles)))
    return out


def col2im(cols, x_shape, kh, kw, padding):
    """Adjoint of :func:`im2col`: (m·Ho·Wo, kh·kw·C_in) -> (m, C_in, H, W)."""
    cols = cupy.ascontiguousarray(cols)
    m, c, h, w = x_shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    out = cupy.empty((m, c, h, w), dtype=cols.dtype)
    _COL2IM(cols, c, h, w, ho, wo, kh, kw, padding, out)
    return out


def max_pool_rows(z):
    """(pooled, winner) of 2×2 max pooling of channel-last z (m, H, W, C); winner int8 in 0..3."""
    z = cupy.ascontiguousarray(z)
    m, h, w, c = z.shape
    h2, w2 = h // 2, w // 2
    pooled = cupy.empty((m, h2, w2, c), dtype=z.dtype)
    winner = cupy.empty((m, h2, w2, c), dtype=cupy.int8)
    _MAXPOOL(z, h, w, h2, w2, c, pooled, winner)
    return pooled, winner


def gather_rows(t, winner):
    """t (m, H, W, C) channel-last at each window's winner -> (m, H//2, W//2, C)."""
    t = cupy.ascontiguousarray(t)
    winner = cupy.ascontiguousarray(winner, dtype=cupy.int8)
    m, h, w, c = t.shape
    out = cupy.empty(winner.shape, dtype=t.dtype)
    _GATHER(t, winner, h, w, winner.shape[1], winner.shape[2], c, out)
    return out


def route_rows(g, winner, shape):
    """g (m, H//2, W//2, C) at the winners of channel-last ``shape`` (m, H, W, C), zero elsewhere."""
    g = cupy.ascontiguousarray(g)
    winner = cupy.ascontiguousarray(winner, dtype=cupy.int8)
    m, h, w, c = shape
    out = cupy.empty(tuple(shape), dtype=g.dtype)
    _ROUTE(g, winner, h, w, g.shape[1], g.shape[2], c, out)
    return out
