"""2×2 max pooling primitives: the Numba kernels give the numpy reference's bits (ties, odd sizes, views)."""
import numpy as np
import pytest

from threefactor.rule import conv
from threefactor.backends import get_backend
from threefactor.verify import naive

numba = pytest.importorskip("numba")
NB = get_backend("numba")


def _inputs(rng, shape, dtype, ties):
    z = rng.standard_normal(shape).astype(dtype)
    if ties:                                   # many exact ties: the first maximum must win
        z = np.round(z).astype(dtype)
    return z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 4, 5), (2, 5, 7, 3), (1, 2, 2, 1), (4, 9, 6, 8)])
@pytest.mark.parametrize("ties", [False, True])
def test_numba_pool_equals_numpy(dtype, shape, ties):
    rng = np.random.default_rng(0)
    z = _inputs(rng, shape, dtype, ties)
    a = rng.standard_normal(shape).astype(dtype)
    nb, ref = get_backend("numba"), get_backend("numpy")
    p1, i1, (a1,) = nb.max_pool_rows(z, a)
    p0, i0, (a0,) = ref.max_pool_rows(z, a)
    assert i1.dtype == i0.dtype == np.int8 and p1.dtype == dtype
    assert np.array_equal(i1, i0) and np.array_equal(p1, p0) and np.array_equal(a1, a0)
    g = rng.standard_normal(p0.shape).astype(dtype)
    r1, r0 = nb.route_rows(g, i1, shape), ref.route_rows(g, i0, shape)
    assert np.array_equal(r1, r0)
    assert np.isclose((r0 * a).sum(), (g * a0).sum(), rtol=1e-5)   # route is the adjoint of gather


def test_numba_pool_on_transposed_views_and_against_loops():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2, 3, 6, 5))              # NCHW
    rows = z.transpose(0, 2, 3, 1)                      # channel-last view, not contiguous
    p, idx, _ = get_backend("numba").max_pool_rows(rows)
    zp, _ = naive.max_pool2x2(z)
    assert np.array_equal(p.transpose(0, 3, 1, 2), zp)
    assert np.array_equal(idx, get_backend("numpy").max_pool_rows(rows)[1])


def test_complex_falls_back_to_the_reference():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((2, 4, 4, 3)) + 1j * 1e-30
    p, idx, _ = get_backend("numba").max_pool_rows(z)
    p0, i0, _ = get_backend("numpy").max_pool_rows(z)
    assert np.array_equal(p, p0) and np.array_equal(idx, i0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,pad", [((3, 1, 5, 6), 3, 1), ((2, 2, 5, 6), 3, 1), ((4, 5, 7, 5), 3, 0),
                                         ((2, 6, 4, 4), 2, 2), ((3, 16, 8, 8), 3, 1), ((1, 3, 3, 3), 3, 1)])
def test_numba_im2col_equals_numpy_bit_for_bit(dtype, shape, k, pad):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(dtype)
    ref = conv.im2col(x, k, k, pad)
    got = NB.im2col(x, k, k, pad)
    assert got.dtype == ref.dtype and got.shape == ref.shape and np.array_equal(got, ref)
    view = x.transpose(0, 1, 3, 2)                       # a non-contiguous input
    assert np.array_equal(NB.im2col(view, k, k, pad), conv.im2col(np.ascontiguousarray(view), k, k, pad))
    if shape[1] >= 2:                                    # the kernel runs (single channels keep numpy's path)
        from threefactor.backends import _im2col_numba
        assert np.array_equal(_im2col_numba.im2col(x, k, k, pad), ref)
