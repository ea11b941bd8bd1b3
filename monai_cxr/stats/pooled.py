"""AUCs pooled over training seeds scored on the same test cases, and "enough resolution".

A study trains each (finding, architecture, resolution) cell with S seeds and scores every
seed on the SAME held-out cases. Seed s's AUC is

    A_s = theta + b_s + e_s,

``theta`` the cell's expected AUC (over trainings, on the population), ``b_s`` the training
(between-seed) deviation, variance ``tau^2``, independent across seeds, and ``e_s`` the
test-sample error, whose covariance ``C`` across seeds DeLong's method estimates. The cases
are shared, so the ``e_s`` are correlated and do not average out over seeds; the models
differ, so they are not identical either.

The mean ``A = mean_s A_s`` has ``Var(A) = tau^2 / S + 1'C1 / S^2``. With ``v`` the mean of
C's diagonal and ``c`` the mean of its off-diagonal (the covariance the seeds share through
the cases), ``1'C1 / S^2 = c + (v - c) / S``. The across-seed sample variance ``s^2`` does not
estimate ``tau^2`` alone: ``E[s^2] = tau^2 + (v - c)``, because seeds also disagree case by
case. Estimating ``tau^2`` by ``s^2 - (v - c)`` gives

    Var(A) = s^2 / S + c:

the covariance ``c`` that no number of seeds removes, plus ``s^2 / S``, everything that
averages out over seeds (training and within-case disagreement together). The mean DeLong
variance ``v`` plus ``s^2 / S`` would count ``v - c`` twice (its intervals of a difference
between resolutions cover ~100%). With one seed ``tau^2`` cannot be estimated and ``Var(A)``
is DeLong's ``v``.

Resolutions a and b are different trainings on the same cases, so the covariance of their
means is the mean DeLong covariance ``c_ab`` between their seeds, and
``Var(A_a - A_b) = s_a^2 / S_a + s_b^2 / S_b + (c_a + c_b - 2 c_ab)``, all from one DeLong
covariance of every seed's scores. As in Obuchowski-Rockette analyses of readers scoring
the same cases (seeds play the readers), the case part in brackets is kept at 0 or above,
and the reference is a t distribution with Hillis' degrees of freedom
``Var^2 / sum_g (s_g^2 / S_g)^2 / (S_g - 1)``: ``s^2`` has only ``S - 1`` of them, and the
case part, estimated from all n cases, counts as known. Keeping ``tau^2`` estimates at 0
instead was measured to over-cover differences (97%) when training noise is small, and the
normal reference under-covers differences with few seeds (83% with 2). With one seed per
resolution everything is DeLong's paired test.

Measured coverage of 95% intervals with the t reference (binormal, 150 + 350 cases, S = 2-10
seeds, between-seed SD of the AUC from 0 to 2.5x the DeLong SE, 2000 runs each; script
``benchmarks/pooled_coverage.py``): difference and ratio 94.5-96.0%; mean of one cell 93.6-95.4%,
down to 89% (2 seeds) and 92.5% (3 seeds) when training noise is 2.5x the test-sample noise.
The normal reference covers differences 82-94% with 2-10 seeds.

When seeds happen to agree closely, ``s^2 / S`` can be small and the SE below one seed's DeLong SE;
the few degrees of freedom then widen the interval, and coverage holds on average.

Over 400 lines: the derivation of the pooled variance is written out in the docstrings,
beside the four estimators that use it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from monai_cxr.errors import CxrError
from monai_cxr.stats.delong import _check_level, _check_scores, _check_truth, delong
from monai_cxr.stats.multitest import holm

__all__ = [
    "NonInferiority",
    "PooledAUC",
    "PooledDifference",
    "SufficientResolution",
    "non_inferiority",
    "pool_seeds",
    "pooled_difference",
    "sufficient_resolution",
]

_REFERENCES = ("t", "normal")


@dataclass(frozen=True)
class PooledAUC:
    """The AUC of one cell, pooled over its seeds.

    Attributes
    ----------
    aucs : ndarray of shape (S,)
        Each seed's AUC.
    n_seeds : int
    auc_mean : float
        Mean of the seeds' AUCs.
    auc_sd : float
        Sample SD of the seeds' AUCs (denominator S - 1); NaN for one seed.
    auc_se : float
        Standard error of ``auc_mean``: ``sqrt(auc_sd^2 / S + var_shared)``; DeLong's SE for one seed.
    var_shared : float
        Test-sample variance that more seeds would not remove: the mean DeLong covariance between
        seeds, at least 0 (DeLong's variance for one seed).
    tau2 : float
        Between-seed (training) variance of one seed's AUC, ``s^2 - (v - c)`` kept at 0 or above;
        NaN for one seed. For reading only: ``auc_se`` does not need it.
    df : float
        Degrees of freedom of ``auc_se ** 2`` (``inf`` for one seed).
    ci_low, ci_high : float
        Confidence interval of ``auc_mean`` at ``level``, clipped to [0, 1].
    level : float
    reference : str
        ``"t"`` or ``"normal"``: the distribution behind the interval.
    """

    aucs: np.ndarray = field(repr=False)
    n_seeds: int
    auc_mean: float
    auc_sd: float
    auc_se: float
    var_shared: float
    tau2: float
    df: float
    ci_low: float
    ci_high: float
    level: float
    reference: str


@dataclass(frozen=True)
class PooledDifference:
    """Resolution a against resolution b, each pooled over its seeds, on the same cases.

    Attributes
    ----------
    n_seeds_a, n_seeds_b : int
    auc_a, auc_b : float
        Pooled (mean) AUCs.
    diff, se : float
        ``auc_a - auc_b`` and its standard error.
    z : float
        ``diff / se``; 0 when both are 0, +/-inf when only ``se`` is 0.
    p_value : float
        Two-sided p-value of ``diff = 0``.
    ci_low, ci_high : float
        Confidence interval of ``diff`` (not clipped).
    df : float
        Degrees of freedom of ``se ** 2`` (``inf`` with one seed each: DeLong's paired test).
    cov : float
        Covariance of the two pooled AUCs: the mean DeLong covariance between a's and b's seeds.
    ratio, ratio_se, ratio_ci_low, ratio_ci_high : float
        ``auc_a / auc_b``, its delta-method standard error and interval; NaN if ``auc_b`` is 0.
    ratio_df : float
        Degrees of freedom of ``ratio_se ** 2``.
    level : float
    reference : str
    """

    n_seeds_a: int
    n_seeds_b: int
    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    df: float
    cov: float
    ratio: float
    ratio_se: float
    ratio_ci_low: float
    ratio_ci_high: float
    ratio_df: float
    level: float
    reference: str


@dataclass(frozen=True)
class NonInferiority:
    """One-sided test that a resolution r is within ``margin`` AUC of the best resolution b.

    Attributes
    ----------
    auc_best, auc_r : float
        Pooled AUCs.
    diff, se : float
        ``auc_best - auc_r`` and its standard error.
    margin : float
    z : float
        ``(diff - margin) / se``.
    p_value : float
        One-sided p-value of H0: ``AUC_b - AUC_r >= margin``; small means r is non-inferior.
    df : float
    reference : str
    """

    auc_best: float
    auc_r: float
    diff: float
    se: float
    margin: float
    z: float
    p_value: float
    df: float
    reference: str


@dataclass(frozen=True)
class SufficientResolution:
    """The verdict for one label: which resolution is enough.

    Attributes
    ----------
    best : int
        Resolution with the highest pooled AUC (ties go to the lower resolution).
    sufficient : int
        The smallest of ``best`` and the resolutions non-inferior to it after Holm's adjustment.
    resolutions : list of int
        All resolutions, ascending.
    pooled : dict of int to PooledAUC
    tests : dict of int to NonInferiority
        One per resolution other than ``best``.
    p_values, p_holm : dict of int to float
        Unadjusted and Holm-adjusted one-sided p-values, every resolution; NaN for ``best``.
    margin, alpha : float
    """

    best: int
    sufficient: int
    resolutions: list
    pooled: dict = field(repr=False)
    tests: dict = field(repr=False)
    p_values: dict
    p_holm: dict
    margin: float
    alpha: float


def pool_seeds(y_true, scores, level: float = 0.95, reference: str = "t") -> PooledAUC:
    """Mean AUC of S seeds scored on the same cases, with a standard error that counts both
    the test sample and the training.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Truth, 0/1 or bool.
    scores : array-like of shape (S, n) or (n,)
        One row per seed, every row on the same n cases; a 1-D array is one seed.
    level : float, default=0.95
        Confidence level of the interval.
    reference : {"t", "normal"}, default="t"
        t with Hillis' degrees of freedom, or normal (too narrow with few seeds and real training noise).

    Returns
    -------
    PooledAUC
        ``auc_se ** 2 = s^2 / S + max(c, 0)``, s^2 the across-seed variance of the AUCs and c the mean
        off-diagonal of their joint DeLong covariance (module docstring); DeLong's variance for one seed.

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson, "Comparing the areas under two or more
       correlated receiver operating characteristic curves: a nonparametric approach",
       Biometrics 44(3):837-845, 1988.
    .. [2] N. A. Obuchowski, H. E. Rockette, "Hypothesis testing of diagnostic accuracy for multiple
       readers and multiple tests: an ANOVA approach with dependent observations",
       Communications in Statistics - Simulation and Computation 24(2):285-308, 1995.
    .. [3] S. L. Hillis, "A comparison of denominator degrees of freedom methods for multiple observer
       ROC analysis", Statistics in Medicine 26(3):596-619, 2007.
    """
    level, reference = _check_level(level), _check_reference(reference)
    y = _check_truth(y_true)
    res = delong(y, _check_block(scores, len(y), "scores"), level)
    return _pooled_auc(res.auc, res.cov, level, reference)


def pooled_difference(y_true, scores_a, scores_b, level: float = 0.95, reference: str = "t") -> PooledDifference:
    """Difference and ratio of two resolutions' AUCs, each pooled over its seeds, on the same cases.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Truth, 0/1 or bool.
    scores_a, scores_b : array-like of shape (S_a, n) and (S_b, n)
        Seeds of resolution a and of resolution b on the same n cases. Seed i of a and seed i of b
        are different trainings, so they are not paired, and S_a may differ from S_b.
    level : float, default=0.95
        Confidence level of the intervals.
    reference : {"t", "normal"}, default="t"
        Reference distribution of the test and the intervals.

    Returns
    -------
    PooledDifference
        ``diff = A_a - A_b`` with ``se ** 2 = s_a^2 / S_a + s_b^2 / S_b + max(c_a + c_b - 2 c_ab, 0)``
        (module docstring; a one-seed group contributes its DeLong variance in place of ``c``), all from
        one joint DeLong covariance of the S_a + S_b rows; ``ratio = A_a / A_b`` by the delta method
        with ``Cov(A_a, A_b) = c_ab``. With one seed each this is DeLong's paired test.

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson, Biometrics 44(3):837-845, 1988.
    .. [2] S. L. Hillis, Statistics in Medicine 26(3):596-619, 2007.
    """
    level, reference = _check_level(level), _check_reference(reference)
    y = _check_truth(y_true)
    a = _check_block(scores_a, len(y), "scores_a")
    b = _check_block(scores_b, len(y), "scores_b")
    res = delong(y, np.concatenate([a, b]), level)
    return _difference(res.auc, res.cov, len(a), level, reference)


def non_inferiority(y_true, scores_best, scores_r, margin: float = 0.02, reference: str = "t") -> NonInferiority:
    """One-sided test that resolution r loses less than ``margin`` AUC against the best resolution.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Truth, 0/1 or bool.
    scores_best, scores_r : array-like of shape (S_b, n) and (S_r, n)
        Seeds of the best resolution and of resolution r on the same cases.
    margin : float, default=0.02
        Non-inferiority margin d in AUC, in (0, 1); diagnostic-accuracy trials often use 0.02-0.05.
    reference : {"t", "normal"}, default="t"

    Returns
    -------
    NonInferiority
        H0: ``AUC_b - AUC_r >= d``; ``z = (A_b - A_r - d) / SE`` with SE as in :func:`pooled_difference`,
        ``p = F(z)`` (F the reference CDF; the normal Phi with one seed each). r is non-inferior at
        level alpha when ``p < alpha``.

    References
    ----------
    .. [1] N. A. Obuchowski, "Sample size tables for receiver operating characteristic studies",
       American Journal of Roentgenology 175(3):603-608, 2000.
    """
    margin, reference = _check_margin(margin), _check_reference(reference)
    return _non_inferiority(pooled_difference(y_true, scores_best, scores_r, reference=reference), margin)


def sufficient_resolution(
    y_true, scores_by_resolution, margin: float = 0.02, alpha: float = 0.05, reference: str = "t"
) -> SufficientResolution:
    """The smallest resolution whose pooled AUC is non-inferior to the best one, Holm-adjusted.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Truth, 0/1 or bool.
    scores_by_resolution : dict of int to array-like of shape (S, n)
        Each resolution's seeds on the same n cases (S may differ between resolutions).
    margin : float, default=0.02
        Non-inferiority margin in AUC, in (0, 1).
    alpha : float, default=0.05
        Family-wise error rate over the label's resolutions, in (0, 1).
    reference : {"t", "normal"}, default="t"

    Returns
    -------
    SufficientResolution
        ``best`` = highest pooled AUC (ties to the lower resolution); a :func:`non_inferiority` test of
        every other resolution against it; Holm's adjustment over those tests; ``sufficient`` = the
        smallest of ``best`` and the resolutions whose adjusted p-value is below ``alpha``.

    References
    ----------
    .. [1] S. Holm, "A simple sequentially rejective multiple test procedure",
       Scandinavian Journal of Statistics 6(2):65-70, 1979.
    """
    margin, reference = _check_margin(margin), _check_reference(reference)
    alpha = _check_unit(alpha, "alpha")
    y = _check_truth(y_true)
    if not isinstance(scores_by_resolution, dict) or not scores_by_resolution:
        raise CxrError(
            "scores_by_resolution must be a non-empty dict of resolution -> (S, n) scores, "
            f"got {type(scores_by_resolution).__name__} {_short(scores_by_resolution)}"
        )
    for r in scores_by_resolution:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
            raise CxrError(f"resolutions must be positive integers, got {r!r}")
    resolutions = sorted(scores_by_resolution)
    blocks = {r: _check_block(scores_by_resolution[r], len(y), f"scores at resolution {r}") for r in resolutions}
    res = delong(y, np.concatenate([blocks[r] for r in resolutions]))
    edges = np.cumsum([0] + [len(blocks[r]) for r in resolutions])
    rows = {r: np.arange(edges[i], edges[i + 1]) for i, r in enumerate(resolutions)}

    pooled = {
        r: _pooled_auc(res.auc[rows[r]], res.cov[np.ix_(rows[r], rows[r])], res.level, reference) for r in resolutions
    }
    best = max(resolutions, key=lambda r: (pooled[r].auc_mean, -r))  # ties: the lower resolution
    others = [r for r in resolutions if r != best]
    tests = {}
    for r in others:
        idx = np.concatenate([rows[best], rows[r]])
        diff = _difference(res.auc[idx], res.cov[np.ix_(idx, idx)], len(rows[best]), res.level, reference)
        tests[r] = _non_inferiority(diff, margin)
    p_values = dict.fromkeys(resolutions, math.nan)
    p_values.update((r, tests[r].p_value) for r in others)
    p_holm = dict.fromkeys(resolutions, math.nan)
    p_holm.update(zip(others, map(float, holm([p_values[r] for r in others])), strict=True))
    sufficient = min([best] + [r for r in others if p_holm[r] < alpha])
    return SufficientResolution(
        best=int(best),
        sufficient=int(sufficient),
        resolutions=[int(r) for r in resolutions],
        pooled=pooled,
        tests=tests,
        p_values=p_values,
        p_holm=p_holm,
        margin=margin,
        alpha=alpha,
    )


# ------------------------------------------------------------------------- internals
def _group(auc: np.ndarray, cov: np.ndarray):
    """One resolution's ``(mean, s^2 or NaN, seed part s^2 / S, case part)``.

    The case part is the mean off-diagonal of its DeLong covariance (c), or DeLong's variance for one
    seed, whose seed part is then 0: ``Var(mean) = seed part + case part``.
    """
    k = len(auc)
    mean = float(auc.mean())
    if k == 1:
        return mean, math.nan, 0.0, float(cov[0, 0])
    s2 = float(auc.var(ddof=1))
    return mean, s2, s2 / k, (float(cov.sum()) - float(np.trace(cov))) / (k * (k - 1))


def _pooled_auc(auc, cov, level, reference) -> PooledAUC:
    k = len(auc)
    mean, s2, seed, case = _group(auc, cov)
    shared = max(case, 0.0)
    var = seed + shared
    df = _hillis_df(var, [(seed, k)])
    se = math.sqrt(var)
    crit = _crit(level, df, reference)
    tau2 = max(s2 - (float(np.trace(cov)) / k - case), 0.0) if k > 1 else math.nan
    return PooledAUC(
        aucs=np.array(auc, dtype=np.float64),
        n_seeds=k,
        auc_mean=mean,
        auc_sd=math.sqrt(s2) if k > 1 else math.nan,
        auc_se=se,
        var_shared=shared,
        tau2=tau2,
        df=df,
        ci_low=max(mean - crit * se, 0.0),
        ci_high=min(mean + crit * se, 1.0),
        level=level,
        reference=reference,
    )


def _difference(auc, cov, k_a, level, reference) -> PooledDifference:
    """Pooled a - b from the joint AUCs and DeLong covariance of a's k_a rows followed by b's rows."""
    k_b = len(auc) - k_a
    a, b = slice(0, k_a), slice(k_a, k_a + k_b)
    mean_a, _, seed_a, case_a = _group(auc[a], cov[a, a])
    mean_b, _, seed_b, case_b = _group(auc[b], cov[b, b])
    cov_ab = float(cov[a, b].mean())
    diff = mean_a - mean_b
    var = seed_a + seed_b + max(case_a + case_b - 2.0 * cov_ab, 0.0)
    se = math.sqrt(var)
    df = _hillis_df(var, [(seed_a, k_a), (seed_b, k_b)])
    z = _ratio_or_sign(diff, se)
    crit = _crit(level, df, reference)
    if mean_b > 0:  # delta method; the same split into seed parts and a case part kept at 0 or above
        ga, gb = 1.0 / mean_b, mean_a / mean_b**2  # d ratio / d A_a, -d ratio / d A_b
        ratio = mean_a / mean_b
        terms = [(ga * ga * seed_a, k_a), (gb * gb * seed_b, k_b)]
        ratio_var = sum(t for t, _ in terms) + max(ga * ga * case_a + gb * gb * case_b - 2 * ga * gb * cov_ab, 0.0)
        ratio_se = math.sqrt(ratio_var)
        ratio_df = _hillis_df(ratio_var, terms)
        ratio_crit = _crit(level, ratio_df, reference)
    else:  # undefined, not an error: the difference still stands
        ratio = ratio_se = ratio_df = ratio_crit = math.nan
    return PooledDifference(
        n_seeds_a=k_a,
        n_seeds_b=k_b,
        auc_a=mean_a,
        auc_b=mean_b,
        diff=diff,
        se=se,
        z=z,
        p_value=2.0 * _cdf(-abs(z), df, reference),
        ci_low=diff - crit * se,
        ci_high=diff + crit * se,
        df=df,
        cov=cov_ab,
        ratio=ratio,
        ratio_se=ratio_se,
        ratio_ci_low=ratio - ratio_crit * ratio_se,
        ratio_ci_high=ratio + ratio_crit * ratio_se,
        ratio_df=ratio_df,
        level=level,
        reference=reference,
    )


def _non_inferiority(diff: PooledDifference, margin: float) -> NonInferiority:
    z = _ratio_or_sign(diff.diff - margin, diff.se)
    return NonInferiority(
        auc_best=diff.auc_a,
        auc_r=diff.auc_b,
        diff=diff.diff,
        se=diff.se,
        margin=margin,
        z=z,
        p_value=_cdf(z, diff.df, diff.reference),
        df=diff.df,
        reference=diff.reference,
    )


def _hillis_df(var: float, seed_terms) -> float:
    """Satterthwaite degrees of freedom of ``var`` when only its seed terms (S - 1 df each) are noisy."""
    denom = sum(t * t / (k - 1) for t, k in seed_terms if k > 1)
    return var * var / denom if denom > 0 else math.inf


def _ratio_or_sign(num: float, se: float) -> float:
    if se > 0:
        return num / se
    return 0.0 if num == 0 else math.copysign(math.inf, num)


def _cdf(z: float, df: float, reference: str) -> float:
    if reference == "normal" or math.isinf(df):
        return 0.5 * math.erfc(-z / math.sqrt(2.0))
    from scipy.special import stdtr

    return float(stdtr(df, z))


def _crit(level: float, df: float, reference: str) -> float:
    if reference == "normal" or math.isinf(df):
        from statistics import NormalDist

        return NormalDist().inv_cdf(0.5 + level / 2.0)
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + level / 2.0))


def _check_block(scores, n: int, name: str) -> np.ndarray:
    """One resolution's (S, n) scores, checked by DeLong's rules; the message names the argument."""
    try:
        s = _check_scores(scores, n)
    except CxrError as err:
        msg = str(err)
        raise CxrError(f"{name} {msg[len('scores ') :]}" if msg.startswith("scores ") else f"{name}: {msg}") from None
    return np.asarray(s, dtype=np.float64)


def _check_reference(reference) -> str:
    if not isinstance(reference, str) or reference not in _REFERENCES:
        raise CxrError(f"reference must be one of {', '.join(_REFERENCES)}, got {reference!r}")
    return reference


def _check_unit(value, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise CxrError(f"{name} must be a number in (0, 1), got {_short(value)}") from None
    if not 0.0 < x < 1.0:  # NaN fails too
        raise CxrError(f"{name} must be in (0, 1), got {value!r}")
    return x


def _check_margin(margin) -> float:
    return _check_unit(margin, "margin")


def _short(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
