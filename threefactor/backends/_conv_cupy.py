"""CuPy kernels of the conv layer's array operations (see :mod:`threefactor.conv`).

Each operation of :mod:`threefactor.conv` that would otherwise take several
strided copies is one ``ElementwiseKernel`` over its *output* (one thread per
output element, no atomics, so results are deterministic and bit-equal to the
numpy reference):

``im2col``       cols (m·Ho·Wo, kh·kw·C_in)   from x (m, C_in, H, W)
``col2im``       x (m, C_in, H, W)             summing the kh·kw rows that saw each pixel
``max_pool_rows``  pooled, winner (m, H//2, W//2, C)  first maximum of each 2×2 window
``route_rows``     (m, H, W, C)                   g at the winners, 0 elsewhere

(pooling is channel-last, the layout the forward GEMM writes).

The column order is (dy, dx, c) with c fastest, exactly as in
:func:`threefactor.conv.im2col`.  Kernels are built lazily from their
:mod:`._cuda_source` records (compiled without a GPU by
``tests/test_cuda_sources.py``), so this module imports without CuPy;
:mod:`threefactor.conv` calls it only for cupy arrays.
The GEMMs themselves (forward and update) go through the backend's cuBLAS
``matmul`` / ``hebbian``.
"""
from __future__ import annotations

try:  # importable without CuPy: only the functions need it
    import cupy
except ImportError:  # pragma: no cover - exercised only where cupy is missing
    cupy = None

from ._cuda_source import ElementwiseSource, LazyKernel

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

# Pooling works channel-last, on z (m, H, W, C) contiguous:
# pooled[n, py, px, c] = max of the 2x2 window, winner = dy*2 + dx of its first maximum
_MAXPOOL = LazyKernel(ElementwiseSource(
    "raw T z, int32 H, int32 W, int32 H2, int32 W2, int32 C", "T pooled, int8 winner",
    """
    long long e = i;
    const int c = e % C;   e /= C;
    const int px = e % W2; e /= W2;
    const int py = e % H2;
    const long long n = e / H2;
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


def im2col(x, kh, kw, padding):
    """(m·Ho·Wo, kh·kw·C_in) patches of x (m, C_in, H, W); see :func:`threefactor.conv.im2col`."""
    x = cupy.ascontiguousarray(x)
    m, c, h, w = x.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    cols = cupy.empty((m * ho * wo, kh * kw * c), dtype=x.dtype)
    _IM2COL(x, c, h, w, ho, wo, kh, kw, padding, cols)
    return cols


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


def route_rows(g, winner, shape):
    """g (m, H//2, W//2, C) at the winners of channel-last ``shape`` (m, H, W, C), zero elsewhere."""
    g = cupy.ascontiguousarray(g)
    winner = cupy.ascontiguousarray(winner, dtype=cupy.int8)
    m, h, w, c = shape
    out = cupy.empty(tuple(shape), dtype=g.dtype)
    _ROUTE(g, winner, h, w, g.shape[1], g.shape[2], c, out)
    return out
