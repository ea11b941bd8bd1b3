"""DeLong's single integer sort: scores that the truncated keys cannot tell apart stay exact.

``_sort_rows`` keeps the top bits of each score's key and puts the case index in the low
bits, so scores closer than ~2**(b - 52) relative share a key "block". These tests build such
blocks on purpose (few: the sparse path; many, among heavy ties: the dense path) and check
every result against the O(m n) definition.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from monai_cxr.stats import delong

EPS = np.finfo(np.float64).eps
delong_module = importlib.import_module("monai_cxr.stats.delong")  # the package attribute is the function


def pairwise(y, scores):
    """AUCs and DeLong covariance from the kernel psi(X_i, Y_j), no sorting involved."""
    s = np.atleast_2d(scores)
    x, z = s[:, y], s[:, ~y]
    psi = (x[:, :, None] > z[:, None, :]) + 0.5 * (x[:, :, None] == z[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    k = len(s)
    cov = np.cov(v10, ddof=1).reshape(k, k) / v10.shape[1] + np.cov(v01, ddof=1).reshape(k, k) / v01.shape[1]
    return psi.mean(axis=(1, 2)), cov


def labels(rng, n):
    y = rng.random(n) < 0.4
    y[:2], y[2:4] = True, False
    return y


def check(y, s):
    res = delong(y, s)
    auc, cov = pairwise(y, s)
    np.testing.assert_allclose(res.auc, auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cov, cov, rtol=0, atol=1e-12)
    return res


def test_scores_one_ulp_apart_share_a_block_and_are_sorted_exactly():
    rng = np.random.default_rng(0)
    n = 1500
    y = labels(rng, n)
    # a few hundred distinct values within 300 ulps of 1 (all in one key block), in random case order
    near_one = 1.0 + rng.integers(0, 300, n) * EPS
    bits = (n - 1).bit_length()
    keys = delong_module._sort_keys(near_one[None, :])[0] >> np.uint64(bits)
    assert len(np.unique(keys)) < 5 < len(np.unique(near_one))  # the test exercises what it claims
    s = np.stack([near_one, -near_one, near_one + y * 2 * EPS])
    check(y, s)


def test_a_few_close_pairs_among_distinct_scores():
    """The sparse path: most keys distinct, a handful of blocks hold two different scores."""
    rng = np.random.default_rng(1)
    n = 2000
    y = labels(rng, n)
    s = rng.normal(size=(2, n))
    s[:, 1::50] = s[:, ::50][:, : s[:, 1::50].shape[1]] * (1 + 4 * EPS)  # 40 near-twins per row
    s[1, 3::100] = s[1, 2::100][: s[1, 3::100].shape[0]]  # and exact ties
    check(y, s)


def test_close_scores_among_heavy_ties():
    """The dense path: most keys share blocks (ties), and some blocks are out of order."""
    rng = np.random.default_rng(2)
    n = 2000
    y = labels(rng, n)
    s = np.round(rng.normal(size=(2, n)) + y, 1)
    s[0, ::7] += EPS * rng.integers(-3, 4, len(s[0, ::7]))
    check(y, s)


def test_signed_zeros_tie():
    rng = np.random.default_rng(3)
    y = labels(rng, 300)
    s = rng.choice([-0.0, 0.0, -1.0, 1.0], size=(2, 300))
    res = check(y, s)
    flipped = delong(y, np.where(s == 0, -s, s))  # -0.0 <-> 0.0 changes nothing
    np.testing.assert_array_equal(flipped.auc, res.auc)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int8, np.float32, np.float16, np.longdouble])
def test_integer_extremes_and_other_dtypes(dtype):
    rng = np.random.default_rng(4)
    y = labels(rng, 400)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    values = np.array([info.min, info.min + 1, 0, 1, info.max - 1, info.max], dtype=dtype)
    s = rng.choice(values, size=(2, 400))
    res = delong(y, s)
    auc, cov = pairwise(y, s)
    np.testing.assert_allclose(res.auc, auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cov, cov, rtol=0, atol=1e-12)


def test_sorted_order_is_a_permutation_that_sorts():
    rng = np.random.default_rng(5)
    s = np.stack([1.0 + rng.integers(0, 50, 700) * EPS, np.round(rng.normal(size=700), 1)])
    order, flat, opens = delong_module._sort_rows(s)
    for row in range(2):
        assert sorted(order[row]) == list(range(700))
        ordered = s[row, order[row]]
        assert (np.diff(ordered) >= 0).all()
        np.testing.assert_array_equal(opens[row], np.r_[True, ordered[1:] != ordered[:-1]])
    np.testing.assert_array_equal(flat, order + np.array([[0], [700]]))
