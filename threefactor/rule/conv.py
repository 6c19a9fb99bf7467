"""Convolution as one GEMM (im2col / col2im) and 2×2 max pooling with argmax routing.

Paper Sec. 4.3 and App. D.1: a conv layer is conv (stride 1, zero padding,
no bias) -> nonlinearity -> optional 2×2 max pool.  Shapes::

    x     (m, C_in, H, W)            input, channel-major (NCHW)
    w     (C_out, C_in, kh, kw)      weights
    Ho, Wo = H + 2·pad - kh + 1, W + 2·pad - kw + 1,    P = Ho·Wo positions
    cols  (m·P, kh·kw·C_in)          row (i, oh, ow) = the patch sample i shows position (oh, ow)
    a     = cols · w_colsᵀ           (m·P, C_out): the forward pass is one GEMM
    ΔW    = postᵀ · cols             (C_out, kh·kw·C_in): weight sharing sums over positions, one GEMM

The columns of ``cols`` run over (dy, dx, c) with c fastest, so that every
copy im2col makes is a contiguous run of channels; :func:`weights_to_cols` and
:func:`cols_to_weights` convert w to and from that order.

Max pooling takes non-overlapping 2×2 windows (stride 2; an odd last row or
column is dropped, as PyTorch's MaxPool2d does) and records the winner of each
window (0..3, row-major in the window; the first one on ties).  The winner
routes the post-synaptic term back to one position (:func:`route_rows`).  The
rule pools channel-last arrays (m, Ho, Wo, C), the layout the forward GEMM
writes; :func:`max_pool2x2`, :func:`pool_gather`, :func:`pool_route` are the
same operations on channel-major (m, C, H, W) arrays.

The naive loops (:func:`threefactor.verify.naive.conv2d`,
:func:`~threefactor.verify.naive.max_pool2x2`) define the meaning; tests compare
the GEMM forms against them.  Everything here is the reference, written against
an array namespace ``xp`` and working with complex inputs (comparisons use the
real part) for complex-step checks; the layers call the backend's primitives
(``im2col``, ``col2im``, ``rows_to_nchw``, ``max_pool_rows``, ``route_rows``:
:class:`threefactor.backends.base.Backend`), which a GPU backend fuses.
"""
from __future__ import annotations

import numpy as np

POOLS = (None, "max")


def conv_out_size(h: int, w: int, kh: int, kw: int, padding: int):
    """(Ho, Wo) of a stride-1 convolution with zero padding ``padding``."""
    return h + 2 * padding - kh + 1, w + 2 * padding - kw + 1


def pool_out_size(h: int, w: int, pool):
    """Spatial size after pooling (None: unchanged; "max": 2×2, stride 2, floor)."""
    return (h, w) if pool is None else (h // 2, w // 2)


def weights_to_cols(w, xp=np):
    """w (C_out, C_in, kh, kw) -> (C_out, kh·kw·C_in) in the column order of :func:`im2col`."""
    c_out = w.shape[0]
    return xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(c_out, -1)


def cols_to_weights(dw, w_shape, xp=np):
    """Inverse of :func:`weights_to_cols`: (C_out, kh·kw·C_in) -> (C_out, C_in, kh, kw)."""
    c_out, c_in, kh, kw = w_shape
    return xp.ascontiguousarray(dw.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2))


def im2col(x, kh: int, kw: int, padding: int, xp=np):
    """Patches of ``x`` (m, C_in, H, W) as rows: (m·Ho·Wo, kh·kw·C_in).

    Row i·P + oh·Wo + ow holds x_pad[i, c, oh+dy, ow+dx] at column (dy·kw + dx)·C_in + c.
    One copy per kernel offset (kh·kw of them), never a loop over positions.
    """
    m, c, h, w = x.shape
    ho, wo = conv_out_size(h, w, kh, kw, padding)
    xpad = xp.zeros((m, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    xpad[:, padding:padding + h, padding:padding + w, :] = x.transpose(0, 2, 3, 1)
    cols = xp.empty((m, ho, wo, kh, kw, c), dtype=x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            cols[:, :, :, dy, dx, :] = xpad[:, dy:dy + ho, dx:dx + wo, :]
    return cols.reshape(m * ho * wo, kh * kw * c)


def col2im(cols, x_shape, kh: int, kw: int, padding: int, xp=np):
    """Adjoint of :func:`im2col`: sum the rows of ``cols`` back onto the input grid.

    cols (m·Ho·Wo, kh·kw·C_in) -> (m, C_in, H, W).  With cols = post · w_cols this
    is dL/dx of a convolution (used by the backprop baseline, never by the local rule).
    """
    m, c, h, w = x_shape
    ho, wo = conv_out_size(h, w, kh, kw, padding)
    blocks = cols.reshape(m, ho, wo, kh, kw, c)
    xpad = xp.zeros((m, h + 2 * padding, w + 2 * padding, c), dtype=cols.dtype)
    for dy in range(kh):
        for dx in range(kw):
            xpad[:, dy:dy + ho, dx:dx + wo, :] += blocks[:, :, :, dy, dx, :]
    return xp.ascontiguousarray(xpad[:, padding:padding + h, padding:padding + w, :].transpose(0, 3, 1, 2))


def rows_to_nchw(t, m: int, ho: int, wo: int, xp=np):
    """(m·Ho·Wo, C) in im2col row order, or (m, Ho, Wo, C) -> (m, C, Ho, Wo) contiguous."""
    return xp.ascontiguousarray(t.reshape(m, ho, wo, -1).transpose(0, 3, 1, 2))


def conv2d(x, w, padding: int, xp=np, matmul=None):
    """a = conv(x, w): (m, C_in, H, W), (C_out, C_in, kh, kw) -> (m, C_out, Ho, Wo), one GEMM."""
    m, _, h, wd = x.shape
    kh, kw = w.shape[2:]
    ho, wo = conv_out_size(h, wd, kh, kw, padding)
    cols = im2col(x, kh, kw, padding, xp)
    wc = weights_to_cols(w, xp)
    a = matmul(cols, wc.T) if matmul is not None else cols @ wc.T
    return rows_to_nchw(a, m, ho, wo, xp)


# -- 2×2 max pooling ----------------------------------------------------------
# The rule pools the GEMM's output where it lies, channel-last (m, Ho, Wo, C):
# the winner's quarter j = dy·2 + dx of each window is read through the strided
# view t[:, dy::2, dx::2, :], so no window array is ever copied out.

def _quarters(t):
    """The four views t[:, dy::2, dx::2, :] of (m, H, W, C), cropped to even H, W, in winner order."""
    h2, w2 = t.shape[1] // 2, t.shape[2] // 2
    return [t[:, dy:2 * h2:2, dx:2 * w2:2, :] for dy in (0, 1) for dx in (0, 1)]


def max_pool_rows(z, xp=np, *extra):
    """2×2 max pooling of channel-last z (m, H, W, C), with the winner of each window.

    Returns (pooled (m, H//2, W//2, C), winner int8 (same shape), [each array of
    ``extra`` (m, H, W, C) read at the winners]).  The winner is the first
    maximum (by the real part) in the order dy·2 + dx: a tournament of the two
    rows' pairs, then of the two pair winners, each won only by a strictly larger value.
    """
    real = (lambda t: t.real) if xp.iscomplexobj(z) else (lambda t: t)
    q0, q1, q2, q3 = _quarters(z)
    top = real(q1) > real(q0)                 # winner of the top pair is 1, else 0
    bottom = real(q3) > real(q2)              # winner of the bottom pair is 3, else 2
    t01, t23 = xp.where(top, q1, q0), xp.where(bottom, q3, q2)
    low = real(t23) > real(t01)               # the bottom pair wins
    pick = lambda t: xp.where(low, xp.where(bottom, t[3], t[2]), xp.where(top, t[1], t[0]))
    pooled = xp.where(low, t23, t01)
    idx = xp.where(low, bottom.astype(xp.int8) + xp.int8(2), top.astype(xp.int8))
    return pooled, idx, [pick(_quarters(t)) for t in extra]


def gather_rows(t, idx, xp=np):
    """t (m, H, W, C) at each window's winner -> (m, H//2, W//2, C) (e.g. f'(a) at the winners)."""
    q = _quarters(t)
    return xp.where(idx == 0, q[0], xp.where(idx == 1, q[1], xp.where(idx == 2, q[2], q[3])))


def route_rows(g, idx, shape, xp=np):
    """Adjoint of :func:`gather_rows`: g (m, H//2, W//2, C) to the winners of (m, H, W, C), 0 elsewhere.

    This is how the post-synaptic term of a pooled unit reaches the one
    position that won its window: -dL/da is zero at the three losers.
    """
    out = xp.zeros(shape, dtype=g.dtype)
    for j, view in enumerate(_quarters(out)):
        view[...] = xp.where(idx == j, g, xp.zeros((), dtype=g.dtype))
    return out


def post_rows(post, idx, conv_shape, xp=np, route=None):
    """Post-synaptic term at the layer's units (m, C, H', W') -> (m·Ho·Wo, C) at the conv positions.

    Without pooling (``idx`` None) a change of layout; with 2×2 max pooling
    each unit's term goes to its window's winner (zero at the losers).
    ``conv_shape`` is (m, C, Ho, Wo).  The rows multiply the im2col patches in
    the update GEMM ΔW = postᵀ cols.  ``route`` is a backend's ``route_rows``
    (default: :func:`route_rows` with ``xp``).
    """
    m, c, ho, wo = conv_shape
    rows = post.transpose(0, 2, 3, 1)
    if idx is not None:
        rows = (route_rows(rows, idx, (m, ho, wo, c), xp) if route is None
                else route(rows, idx, (m, ho, wo, c)))
    return xp.ascontiguousarray(rows).reshape(m * ho * wo, c)


def max_pool2x2(z, xp=np):
    """2×2 max pooling (stride 2, floor) of z (m, C, H, W) with the winner of each window.

    Returns pooled (m, C, H//2, W//2), maximum of each window (by the real part,
    so complex steps pass through), and idx (m, C, H//2, W//2), the winner's
    position dy·2 + dx inside its window (the first one on ties).
    """
    pooled, idx, _ = max_pool_rows(z.transpose(0, 2, 3, 1), xp)
    return pooled.transpose(0, 3, 1, 2), idx.transpose(0, 3, 1, 2)


def pool_gather(t, idx, xp=np):
    """t (m, C, H, W) at each window's winner -> (m, C, H//2, W//2)."""
    return gather_rows(t.transpose(0, 2, 3, 1), idx.transpose(0, 2, 3, 1), xp).transpose(0, 3, 1, 2)


def pool_route(g, idx, shape, xp=np):
    """Adjoint of :func:`pool_gather`: g (m, C, H//2, W//2) to the winners of ``shape`` (m, C, H, W)."""
    m, c, h, w = shape
    out = route_rows(g.transpose(0, 2, 3, 1), idx.transpose(0, 2, 3, 1), (m, h, w, c), xp)
    return out.transpose(0, 3, 1, 2)
