"""Dropout masks: every sampler (sparse positions for small p and one draw per unit on the host;
the SplitMix64 hash of the GPU) gives independent Bernoulli keeps with the stated drop probability,
and the CuPy kernel computes exactly its numpy reference."""
import numpy as np
import pytest
from scipy import stats

from threefactor.nn import dropout
from threefactor.backends import get_backend
from threefactor.nn.dropout import SPARSE_DROP_MAX, alpha_dropout, dropout_mask, host_keep, host_select, splitmix_keep

PS = [0.01, SPARSE_DROP_MAX, 0.05, 0.3]


def _seeded_splitmix(rng, shape, p):
    return splitmix_keep(dropout.draw_seed(rng), dropout.drop_threshold(p), shape)


SAMPLERS = {"host": host_keep, "splitmix": _seeded_splitmix}


def assert_bernoulli(dropped, p):
    """dropped: (draws, n) bools.  The total drop count, the count per position and the count per
    mask are what independent Bernoulli(p) drops give (two-sided tests at level 1e-4 each)."""
    draws, n = dropped.shape
    assert stats.binomtest(int(dropped.sum()), draws * n, p).pvalue > 1e-4
    per_position = dropped.sum(axis=0)          # each ~ Binomial(draws, p): uniform over positions
    chi2 = ((per_position - draws * p) ** 2 / (draws * p * (1 - p))).sum()
    assert stats.chi2.sf(chi2, n) > 1e-4 and stats.chi2.cdf(chi2, n) > 1e-4
    per_mask = dropped.sum(axis=1)              # each ~ Binomial(n, p): independence within a mask
    var_ratio = per_mask.var(ddof=1) / (n * p * (1 - p))
    assert abs(var_ratio - 1) < 6 * np.sqrt(2 / (draws - 1)) + 0.05
    pair = (dropped[:, 0] & dropped[:, 1]).mean()   # two positions dropped together: p² on average
    assert abs(pair - p * p) < 6 * np.sqrt(p * p / draws) + 1e-3


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("p", PS)
def test_keep_masks_are_bernoulli(sampler, p):
    rng = np.random.default_rng(1)
    draws, shape = 4000, (8, 25)
    dropped = np.stack([~SAMPLERS[sampler](rng, shape, p) for _ in range(draws)]).reshape(draws, -1)
    assert_bernoulli(dropped, p)


def test_splitmix_is_uniform_over_a_large_mask():
    """One large device-style mask: drop rate p and no structure along the index (adjacent units,
    units 1024 apart: the rows of a layer) beyond chance."""
    p, n = 0.1, 1 << 20
    drop = ~splitmix_keep(np.uint64(12345), dropout.drop_threshold(p), (n,))
    assert stats.binomtest(int(drop.sum()), n, p).pvalue > 1e-4
    for lag in (1, 1024):
        both = int((drop[:-lag] & drop[lag:]).sum())
        assert stats.binomtest(both, n - lag, p * p).pvalue > 1e-4, lag


def test_splitmix_reference_is_splitmix64():
    """The reference hash is SplitMix64's output function (first outputs of the published
    generator with seed 0, written out here with Python integers)."""
    mask64 = (1 << 64) - 1

    def splitmix64(state):
        state = (state + dropout.GOLDEN_GAMMA) & mask64
        z = state
        z = ((z ^ (z >> 30)) * dropout.MIX1) & mask64
        z = ((z ^ (z >> 27)) * dropout.MIX2) & mask64
        return state, z ^ (z >> 31)

    state, outs = 7, []
    for _ in range(5):
        state, z = splitmix64(state)
        outs.append(z >> 40)
    thr = (1 << 24) // 2
    np.testing.assert_array_equal(splitmix_keep(7, thr, (5,)), np.array(outs) >= thr)


def test_drop_threshold():
    assert dropout.drop_threshold(0.0) == 0 and dropout.drop_threshold(1.0) == 1 << 24
    for p in (0.01, 0.05, 0.5):
        assert abs(dropout.drop_threshold(p) / (1 << 24) - p) <= 2.0 ** -24


@pytest.mark.parametrize("p", [0.01, 0.3])
def test_dropout_mask_values_and_seed(p):
    """Values 0 and 1/(1-p) only, the requested dtype, and the same mask from the same seed."""
    be = get_backend("numpy")
    a = dropout_mask(be, np.random.default_rng(7), (64, 33), p, np.float64)
    b = dropout_mask(be, np.random.default_rng(7), (64, 33), p, np.float64)
    assert a.dtype == np.float64 and a.shape == (64, 33)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0 / (1.0 - p)}
    assert dropout_mask(be, np.random.default_rng(7), (3, 3), 0.0) is None
    assert alpha_dropout(be, np.random.default_rng(7), (3, 3), 0.0) == (None, None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_keep_mask_is_its_reference(dtype):
    """The CuPy kernel computes splitmix_keep with the seed it draws from rng, bit for bit."""
    try:
        be = get_backend("cupy")
    except Exception as exc:  # BackendUnavailable: no CuPy or no GPU
        pytest.skip(f"cupy backend unavailable: {exc}")
    p, shape = 0.05, (37, 3, 5, 5)
    keep = be.keep_mask(np.random.default_rng(3), shape, p, dtype)
    assert be.is_native(keep) and keep.dtype == dtype and keep.shape == shape
    ref = _seeded_splitmix(np.random.default_rng(3), shape, p)
    np.testing.assert_array_equal(be.to_numpy(keep), ref.astype(dtype))
    mask = dropout_mask(be, np.random.default_rng(3), shape, p, dtype)
    np.testing.assert_array_equal(be.to_numpy(mask), ref.astype(dtype) * dtype(1 / (1 - p)))
    mult, add = alpha_dropout(be, np.random.default_rng(3), shape, p, dtype)
    ref_mult, ref_add = _alpha_from_keep(ref.astype(dtype), p, dtype)
    np.testing.assert_array_equal(be.to_numpy(mult), ref_mult)
    np.testing.assert_array_equal(be.to_numpy(add), ref_add)
    with pytest.raises(ValueError, match="one or two arrays"):
        be.keep_select(np.random.default_rng(3), shape, p, dtype, ((1, 0),) * 3)


def _alpha_from_keep(keep, p, dtype):
    """Alpha dropout's (mult, add) by arithmetic on a 0/1 mask of ``dtype`` (the definition)."""
    from threefactor.rule.activations import SELU_ALPHA, SELU_SCALE
    t, sat = np.dtype(dtype).type, SELU_SCALE * SELU_ALPHA
    a = ((1.0 - p) * (1.0 + p * sat * sat)) ** -0.5
    return keep * t(a), (keep - t(1.0 - p)) * t(a * sat)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.01, 0.3])
def test_keep_select_is_arithmetic_on_the_keep_mask(dtype, p):
    """One draw written as the scaled mask or alpha dropout's pair: the bits of 0/1-mask arithmetic,
    from the same random numbers as keep_mask (host backends)."""
    be, shape = get_backend("numpy"), (6, 4, 5)
    keep = be.keep_mask(np.random.default_rng(11), shape, p, dtype)
    mask = dropout_mask(be, np.random.default_rng(11), shape, p, dtype)
    assert mask.dtype == dtype
    np.testing.assert_array_equal(mask, keep * dtype(1.0 / (1.0 - p)))
    mult, add = alpha_dropout(be, np.random.default_rng(11), shape, p, dtype)
    ref_mult, ref_add = _alpha_from_keep(keep, p, dtype)
    assert mult.dtype == add.dtype == dtype
    np.testing.assert_array_equal(mult, ref_mult)
    np.testing.assert_array_equal(add, ref_add)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.005, SPARSE_DROP_MAX, 0.3])
def test_host_select_writes_host_keeps_draw(dtype, p):
    """The filled-then-scattered arrays of host_select are a select over host_keep's boolean mask
    from the same seed (sparse and dense draws), and leave the Generator in the same state."""
    shape, t = (16, 3, 40), np.dtype(dtype).type
    pairs = ((t(1.25), t(0.0)), (t(-0.5), t(2.0)))
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    got = host_select(rng_a, shape, p, dtype, pairs)
    keep = host_keep(rng_b, shape, p)
    assert 0 < np.count_nonzero(~keep) < keep.size
    for arr, (on, off) in zip(got, pairs):
        assert arr.shape == shape and arr.dtype == dtype
        np.testing.assert_array_equal(arr, np.where(keep, on, off))
    assert rng_a.random() == rng_b.random()
