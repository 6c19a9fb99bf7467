"""Dropout masks: both samplers (sparse positions for small p, one draw per unit otherwise)
give independent Bernoulli keeps with the stated drop probability."""
import numpy as np
import pytest
from scipy import stats

from threefactor.layers import SPARSE_DROP_MAX, dropout_mask, keep_mask


@pytest.mark.parametrize("p", [0.01, SPARSE_DROP_MAX, 0.05, 0.3])
def test_keep_mask_is_bernoulli(p):
    """Over many masks: the total drop count, the count per position and the count per mask
    are what independent Bernoulli(p) drops give (two-sided tests at level 1e-4 each)."""
    rng = np.random.default_rng(1)
    draws, shape = 4000, (8, 25)
    dropped = np.stack([~keep_mask(rng, shape, p) for _ in range(draws)]).reshape(draws, -1)
    n = dropped.shape[1]
    total = int(dropped.sum())
    assert stats.binomtest(total, draws * n, p).pvalue > 1e-4
    per_position = dropped.sum(axis=0)          # each ~ Binomial(draws, p): uniform over positions
    chi2 = ((per_position - draws * p) ** 2 / (draws * p * (1 - p))).sum()
    assert stats.chi2.sf(chi2, n) > 1e-4 and stats.chi2.cdf(chi2, n) > 1e-4
    per_mask = dropped.sum(axis=1)              # each ~ Binomial(n, p): independence within a mask
    var_ratio = per_mask.var(ddof=1) / (n * p * (1 - p))
    assert abs(var_ratio - 1) < 6 * np.sqrt(2 / (draws - 1)) + 0.05
    pair = (dropped[:, 0] & dropped[:, 1]).mean()   # two positions dropped together: p² on average
    assert abs(pair - p * p) < 6 * np.sqrt(p * p / draws) + 1e-3


@pytest.mark.parametrize("p", [0.01, 0.3])
def test_dropout_mask_values_and_seed(p):
    """Values 0 and 1/(1-p) only, the requested dtype, and the same mask from the same seed."""
    a = dropout_mask(np.random.default_rng(7), (64, 33), p, np.float64)
    b = dropout_mask(np.random.default_rng(7), (64, 33), p, np.float64)
    assert a.dtype == np.float64 and a.shape == (64, 33)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0 / (1.0 - p)}
    assert dropout_mask(np.random.default_rng(7), (3, 3), 0.0) is None
