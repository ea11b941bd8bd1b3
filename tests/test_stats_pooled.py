"""AUCs pooled over seeds: DeLong with one seed, the formula by hand, coverage against a known
truth, the non-inferiority verdict, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from monai_cxr.errors import CxrError
from monai_cxr.stats import (
    delong,
    holm,
    non_inferiority,
    pool_seeds,
    pooled_difference,
    sufficient_resolution,
)


def seeds(rng, z, y, n_seeds, noise, shift_sd=0.0, drop=0.0):
    """S "trained models" on the same cases: shared latent z, a per-seed shift of the separation,
    per-seed case noise; ``drop`` lowers the separation (a worse resolution)."""
    shift = rng.normal(0.0, shift_sd, size=(n_seeds, 1)) - drop
    return z + shift * y + noise * rng.normal(size=(n_seeds, len(y)))


def cases(rng, n_pos, n_neg, mu):
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    return y, rng.normal(size=len(y)) + mu * y


# ---------------------------------------------------------------- one seed, and the formula by hand
def test_one_seed_is_delong():
    rng = np.random.default_rng(0)
    y, z = cases(rng, 40, 90, 1.0)
    a, b = seeds(rng, z, y, 1, 0.7), seeds(rng, z, y, 1, 1.2)
    res = delong(y, np.concatenate([a, b]))
    for s in (a, a[0]):  # (1, n) and (n,)
        p = pool_seeds(y, s)
        assert p.n_seeds == 1 and math.isnan(p.auc_sd) and math.isnan(p.tau2) and math.isinf(p.df)
        assert p.auc_mean == pytest.approx(res.auc[0], abs=1e-15)
        assert p.auc_se == pytest.approx(res.se[0], rel=1e-12)
        assert (p.ci_low, p.ci_high) == pytest.approx(tuple(res.ci[0]), rel=1e-12)
    d, ref = pooled_difference(y, a, b), res.compare(0, 1)
    for name in (
        "diff",
        "se",
        "z",
        "p_value",
        "ci_low",
        "ci_high",
        "cov",
        "ratio",
        "ratio_se",
        "ratio_ci_low",
        "ratio_ci_high",
    ):
        assert getattr(d, name) == pytest.approx(getattr(ref, name), rel=1e-12, abs=1e-15), name


def test_pooled_se_by_hand():
    """Var(mean) = s^2 / S + mean off-diagonal DeLong covariance; the difference adds both seed parts
    and c_a + c_b - 2 c_ab, all from one joint DeLong covariance."""
    rng = np.random.default_rng(1)
    y, z = cases(rng, 60, 140, 1.2)
    a, b = seeds(rng, z, y, 3, 0.8, 0.2), seeds(rng, z, y, 4, 1.1, 0.2, drop=0.3)
    res = delong(y, np.concatenate([a, b]))
    auc_a, auc_b = res.auc[:3], res.auc[3:]
    ca, cb, cab = res.cov[:3, :3], res.cov[3:, 3:], res.cov[:3, 3:]
    off_a = ca[~np.eye(3, dtype=bool)].mean()
    off_b = cb[~np.eye(4, dtype=bool)].mean()
    p = pool_seeds(y, a)
    assert p.auc_mean == pytest.approx(auc_a.mean())
    assert p.auc_sd == pytest.approx(auc_a.std(ddof=1))
    assert off_a > 0 and p.var_shared == pytest.approx(off_a)
    assert p.auc_se**2 == pytest.approx(auc_a.var(ddof=1) / 3 + off_a, rel=1e-12)
    assert p.tau2 == pytest.approx(max(auc_a.var(ddof=1) - (np.diag(ca).mean() - off_a), 0.0), abs=1e-15)
    seed_term = auc_a.var(ddof=1) / 3
    assert p.df == pytest.approx(p.auc_se**4 / (seed_term**2 / 2))
    half = sps.t.ppf(0.975, p.df) * p.auc_se
    assert (p.ci_low, p.ci_high) == pytest.approx((p.auc_mean - half, p.auc_mean + half), rel=1e-12)

    d = pooled_difference(y, a, b)
    var = auc_a.var(ddof=1) / 3 + auc_b.var(ddof=1) / 4 + max(off_a + off_b - 2 * cab.mean(), 0.0)
    assert (d.n_seeds_a, d.n_seeds_b) == (3, 4)
    assert d.diff == pytest.approx(auc_a.mean() - auc_b.mean())
    assert d.se**2 == pytest.approx(var, rel=1e-12)
    assert d.cov == pytest.approx(cab.mean())
    df = var**2 / ((auc_a.var(ddof=1) / 3) ** 2 / 2 + (auc_b.var(ddof=1) / 4) ** 2 / 3)
    assert d.df == pytest.approx(df, rel=1e-12)
    assert d.p_value == pytest.approx(2 * sps.t.sf(abs(d.diff / d.se), df), rel=1e-9)
    assert d.ratio == pytest.approx(auc_a.mean() / auc_b.mean())

    normal = pooled_difference(y, a, b, reference="normal")
    assert normal.se == d.se and normal.p_value == pytest.approx(2 * sps.norm.sf(abs(d.z)), rel=1e-12)
    assert normal.ci_high - normal.ci_low < d.ci_high - d.ci_low  # the t interval is wider


def test_identical_seeds_fall_back_to_delong():
    """Seeds that agree on every case add nothing: s^2 = 0 and the shared covariance is DeLong's variance."""
    rng = np.random.default_rng(2)
    y, z = cases(rng, 30, 70, 1.0)
    one = seeds(rng, z, y, 1, 0.5)
    p = pool_seeds(y, np.repeat(one, 4, axis=0))
    assert p.auc_sd == 0 and math.isinf(p.df)
    assert p.auc_se == pytest.approx(delong(y, one).se[0], rel=1e-12)


# ---------------------------------------------------------------- coverage against a known truth
def expected_auc(mu, noise, shift_sd):
    """E over seeds of Phi((mu + shift) / k), k = sqrt(2 (1 + noise^2)): exactly Phi(mu / sqrt(k^2 + shift_sd^2))."""
    return sps.norm.cdf(mu / math.sqrt(2 * (1 + noise**2) + shift_sd**2))


def test_expected_auc_formula_by_monte_carlo():
    rng = np.random.default_rng(3)
    shift = rng.normal(0, 0.3, 200_000)
    mc = sps.norm.cdf((1.6 + shift) / math.sqrt(2 * 1.25)).mean()
    assert mc == pytest.approx(expected_auc(1.6, 0.5, 0.3), abs=5e-4)


@pytest.mark.parametrize("n_seeds, shift_sd", [(5, 0.1), (3, 0.0)])
def test_intervals_cover_the_true_auc(n_seeds, shift_sd):
    """95% intervals of the pooled mean, difference and ratio cover the truth 93-97% of the time.

    shift_sd 0.1 makes the between-seed SD of the AUC (~0.015) about the DeLong SE (~0.018); with 0
    the seeds differ only case by case, where "mean DeLong variance + s^2 / S" covers ~100%.
    """
    rng = np.random.default_rng(2024)
    mu, noise_a, noise_b, reps = 1.6, 0.5, 1.0, 2000
    th_a, th_b = expected_auc(mu, noise_a, shift_sd), expected_auc(mu, noise_b, shift_sd)
    hit_mean = hit_diff = hit_ratio = 0
    for _ in range(reps):
        y, z = cases(rng, 150, 350, mu)
        a = seeds(rng, z, y, n_seeds, noise_a, shift_sd)
        b = seeds(rng, z, y, n_seeds, noise_b, shift_sd)
        p, d = pool_seeds(y, a), pooled_difference(y, a, b)
        hit_mean += p.ci_low <= th_a <= p.ci_high
        hit_diff += d.ci_low <= th_a - th_b <= d.ci_high
        hit_ratio += d.ratio_ci_low <= th_a / th_b <= d.ratio_ci_high
    assert 0.93 <= hit_mean / reps <= 0.97
    assert 0.93 <= hit_diff / reps <= 0.97
    assert 0.93 <= hit_ratio / reps <= 0.97


# ---------------------------------------------------------------- non-inferiority and the verdict
@pytest.fixture(scope="module")
def study():
    """A large test set; 64, 128 and 256 px equally good, 32 px clearly worse than best - margin."""
    rng = np.random.default_rng(5)
    y, z = cases(rng, 3000, 5000, 1.2)
    by_res = {r: seeds(rng, z, y, 3, 0.6, 0.02) for r in (64, 128, 256)}
    by_res[32] = seeds(rng, z, y, 3, 0.6, 0.02, drop=0.4)  # about 0.08 AUC lower
    return y, by_res


def test_equal_resolution_is_sufficient_and_worse_one_is_not(study):
    y, by_res = study
    v = sufficient_resolution(y, by_res, margin=0.02, alpha=0.05)
    assert v.resolutions == [32, 64, 128, 256]
    assert v.best in (64, 128, 256)
    assert v.best == max(v.resolutions, key=lambda r: v.pooled[r].auc_mean)
    assert v.sufficient == 64
    assert v.p_holm[32] > 0.5 and v.tests[32].diff > 0.05
    assert v.p_holm[64] < 0.05
    assert math.isnan(v.p_values[v.best]) and math.isnan(v.p_holm[v.best]) and v.best not in v.tests


def test_holm_is_applied_over_the_other_resolutions(study):
    y, by_res = study
    v = sufficient_resolution(y, by_res, margin=0.02)
    others = [r for r in v.resolutions if r != v.best]
    raw = [non_inferiority(y, by_res[v.best], by_res[r], margin=0.02).p_value for r in others]
    assert [v.p_values[r] for r in others] == pytest.approx(raw, rel=1e-12)
    assert [v.p_holm[r] for r in others] == pytest.approx(list(holm(raw)), rel=1e-12)
    assert any(v.p_holm[r] > v.p_values[r] for r in others)  # the adjustment did something


def test_tiny_margin_leaves_only_the_best():
    """Tiny margin: nothing is shown non-inferior, the verdict is the best resolution itself."""
    rng = np.random.default_rng(6)
    y, z = cases(rng, 200, 300, 1.0)
    by_res = {r: seeds(rng, z, y, 2, 0.6, 0.05) for r in (32, 64)}
    v = sufficient_resolution(y, by_res, margin=1e-4)
    assert v.sufficient == v.best
    assert all(v.p_holm[r] >= 0.05 for r in v.resolutions if r != v.best)


def test_ties_go_to_the_lower_resolution():
    rng = np.random.default_rng(7)
    y, z = cases(rng, 50, 50, 1.0)
    s = seeds(rng, z, y, 2, 0.5)
    assert sufficient_resolution(y, {256: s, 128: s.copy()}).best == 128


def test_non_inferiority_is_one_sided_at_the_margin():
    rng = np.random.default_rng(8)
    y, z = cases(rng, 400, 600, 1.2)
    best, r = seeds(rng, z, y, 3, 0.6, 0.05), seeds(rng, z, y, 3, 0.6, 0.05, drop=0.1)
    d = pooled_difference(y, best, r, reference="normal")
    for margin in (0.01, 0.05, 0.2):
        ni = non_inferiority(y, best, r, margin=margin, reference="normal")
        assert ni.diff == pytest.approx(d.diff) and ni.se == pytest.approx(d.se)
        assert ni.z == pytest.approx((d.diff - margin) / d.se)
        assert ni.p_value == pytest.approx(sps.norm.cdf(ni.z), rel=1e-12)
        assert (ni.p_value < 0.5) == (d.diff < margin)
    t = non_inferiority(y, best, r, margin=0.05)
    assert t.p_value == pytest.approx(sps.t.cdf(t.z, t.df), rel=1e-9)


# ---------------------------------------------------------------- bad inputs: one line naming the value
def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.fixture
def small():
    rng = np.random.default_rng(9)
    y, z = cases(rng, 10, 10, 1.0)
    return y, seeds(rng, z, y, 2, 0.5)


@pytest.mark.parametrize("margin", [0, 1, -0.02, 1.5, float("nan"), "wide", None])
def test_bad_margin(small, margin):
    y, s = small
    with pytest.raises(CxrError) as e:
        non_inferiority(y, s, s, margin=margin)
    one_line(e, "margin", repr(margin) if not isinstance(margin, float) else "")
    with pytest.raises(CxrError) as e:
        sufficient_resolution(y, {64: s, 128: s}, margin=margin)
    one_line(e, "margin")


@pytest.mark.parametrize("alpha", [0, 1, 2.0])
def test_bad_alpha(small, alpha):
    y, s = small
    with pytest.raises(CxrError) as e:
        sufficient_resolution(y, {64: s}, alpha=alpha)
    one_line(e, "alpha", repr(alpha))


def test_mismatched_shapes_name_the_argument(small):
    y, s = small
    with pytest.raises(CxrError) as e:
        pooled_difference(y, s, s[:, :-1])
    one_line(e, "scores_b", "(2, 19)")
    with pytest.raises(CxrError) as e:
        pool_seeds(y, s[None])
    one_line(e, "scores", "(1, 2, 20)")
    with pytest.raises(CxrError) as e:
        sufficient_resolution(y, {64: s, 128: s[:, :5]})
    one_line(e, "resolution 128")


def test_one_class_truth(small):
    _, s = small
    for y in (np.ones(20), np.zeros(20)):
        with pytest.raises(CxrError) as e:
            pool_seeds(y, s)
        one_line(e, "single class")
        with pytest.raises(CxrError) as e:
            sufficient_resolution(y, {64: s})
        one_line(e, "single class")


def test_non_finite_scores(small):
    y, s = small
    bad = s.copy()
    bad[1, 3] = np.nan
    with pytest.raises(CxrError) as e:
        pooled_difference(y, s, bad)
    one_line(e, "scores_b", "NaN")


@pytest.mark.parametrize(
    "scores_by_resolution, word",
    [
        ({}, "non-empty"),
        ([1, 2], "list"),
        ({"64": None}, "'64'"),
        ({0: None}, "0"),
        ({64.0: None}, "64.0"),
        ({True: None}, "True"),
    ],
)
def test_bad_resolutions(small, scores_by_resolution, word):
    y, _ = small
    with pytest.raises(CxrError) as e:
        sufficient_resolution(y, scores_by_resolution)
    one_line(e, word)


def test_bad_reference(small):
    y, s = small
    with pytest.raises(CxrError) as e:
        pool_seeds(y, s, reference="z")
    one_line(e, "reference", "'z'")
