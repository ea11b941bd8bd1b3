"""DeLong's AUC variance and covariance, with pROC's confidence intervals and tests.

The AUC of a score is the Mann-Whitney statistic: the fraction of (positive, negative)
pairs that the score orders correctly, ties counting one half. DeLong, DeLong &
Clarke-Pearson (1988) split it into per-case "placement" values whose sample
covariances give the covariance of k AUCs measured on the same cases. Sun & Xu (2014)
get the placements from midranks in O(N log N) instead of O(m n). Here one sort per
score row is enough: after sorting, the number of negatives below each positive (and
of positives below each negative), with ties split in half, *is* its placement, so the
within-class midranks of Sun & Xu never need a second sort.

Conventions follow pROC (Robin et al. 2011): sample covariances with denominators m - 1
and n - 1; confidence interval AUC +/- z * SE clipped to [0, 1]; paired test
z = (A_i - A_j) / sqrt(S_ii + S_jj - 2 S_ij) with z = 0 when both difference and SE are
0; unpaired test with Welch-Satterthwaite degrees of freedom. The direction is the
caller's: a higher score means "positive", and an AUC below 0.5 is reported as it is.

Only NumPy is imported up front (normal quantiles come from the standard library and the
t distribution of the unpaired test from ``scipy.special`` when used), so the ``delong``
command starts fast.

Over 400 lines: the algorithm, its validation and its result types with their docstrings
(Parameters, Returns, References, as scikit-learn's metrics).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from monai_cxr.errors import CxrError
from monai_cxr.stats.multitest import holm

__all__ = ["DeLongResult", "PairedComparison", "delong", "delong_unpaired"]

_INT32_MAX = np.iinfo(np.int32).max
_SIGN = np.int64(-(2**63))


@dataclass(frozen=True)
class PairedComparison:
    """Model ``a`` against model ``b``: difference and ratio of their AUCs.

    Attributes
    ----------
    a, b : int
        Indices of the two models (rows of the scores).
    diff, se, ci_low, ci_high : float
        ``auc_a - auc_b``, its standard error and its confidence interval (not clipped).
    z : float
        ``diff / se``; 0 when both are 0 (pROC), +/-inf when only ``se`` is 0.
        For the unpaired test it is pROC's ``D`` statistic, referred to a t distribution.
    p_value : float
        Two-sided p-value.
    cov : float
        DeLong covariance of the two AUCs (0 for models scored on different cases).
    ratio, ratio_se, ratio_ci_low, ratio_ci_high : float
        ``auc_a / auc_b``, its delta-method standard error and confidence interval.
    level : float
        Confidence level of both intervals.
    df : float
        Degrees of freedom of the reference distribution: ``inf`` (normal) for the paired
        test, Welch-Satterthwaite for the unpaired one.
    """

    a: int
    b: int
    diff: float
    se: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float
    cov: float
    ratio: float
    ratio_se: float
    ratio_ci_low: float
    ratio_ci_high: float
    level: float
    df: float = math.inf


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of k models on the same cases and their DeLong covariance.

    Attributes
    ----------
    auc : ndarray of shape (k,)
    cov : ndarray of shape (k, k)
        DeLong covariance matrix of the AUCs (``S = S10 / m + S01 / n``).
    level : float
        Confidence level of :attr:`ci` and of :meth:`compare`.
    n_pos, n_neg : int
        Number of positive and negative cases.
    var, se : ndarray of shape (k,)
        Diagonal of ``cov`` and its square root.
    ci : ndarray of shape (k, 2)
        ``auc -/+ z * se``, clipped to [0, 1] (pROC's ``ci.auc``).
    """

    auc: np.ndarray
    cov: np.ndarray
    level: float
    n_pos: int
    n_neg: int

    @property
    def var(self) -> np.ndarray:
        return np.diag(self.cov).copy()

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(self.var)

    @property
    def ci(self) -> np.ndarray:
        half = _z_crit(self.level) * self.se
        return np.clip(np.stack([self.auc - half, self.auc + half], axis=-1), 0.0, 1.0)

    def compare(self, i: int, j: int) -> PairedComparison:
        """Paired DeLong test and AUC ratio of model ``i`` against model ``j``.

        Parameters
        ----------
        i, j : int
            Row indices of the two models in the scores given to :func:`delong`.

        Returns
        -------
        PairedComparison
            ``diff = auc[i] - auc[j]`` with ``var = S_ii + S_jj - 2 S_ij`` and a normal
            reference (pROC's ``roc.test(paired = TRUE, method = "delong")``), and
            ``ratio = auc[i] / auc[j]`` with its delta-method standard error.
        """
        k = len(self.auc)
        i, j = (_model_index(x, k) for x in (i, j))
        c = self.cov
        return _comparison(i, j, self.auc[i], self.auc[j], c[i, i], c[j, j], c[i, j], self.level)

    def to_dict(self, names=None) -> dict:
        """A JSON-ready summary: every model, and every pair ``i < j`` compared.

        Parameters
        ----------
        names : sequence of str, optional
            Model names (default ``"0", "1", ...``), used for ``name``, ``a`` and ``b``.

        Returns
        -------
        dict
            ``{"level", "n_pos", "n_neg", "scores": [{"name", "auc", "var", "se",
            "ci_low", "ci_high"}], "pairs": [{"a", "b", "cov", "diff", "se", "ci_low",
            "ci_high", "z", "p_value", "p_holm", "ratio", "ratio_se", "ratio_ci_low",
            "ratio_ci_high"}]}``; ``diff`` and ``z`` are for a - b, ``ratio`` is a / b,
            ``p_holm`` is Holm-adjusted over all pairs. Non-finite numbers become ``None``.
        """
        k = len(self.auc)
        names = [str(i) for i in range(k)] if names is None else [str(x) for x in names]
        if len(names) != k:
            raise CxrError(f"{len(names)} names given for {k} models")
        ci = self.ci
        scores = [
            {
                "name": names[i],
                "auc": self.auc[i],
                "var": self.var[i],
                "se": self.se[i],
                "ci_low": ci[i, 0],
                "ci_high": ci[i, 1],
            }
            for i in range(k)
        ]
        comps = [self.compare(i, j) for i in range(k) for j in range(i + 1, k)]
        adjusted = holm([c.p_value for c in comps])
        pairs = [
            {
                "a": names[c.a],
                "b": names[c.b],
                "cov": c.cov,
                "diff": c.diff,
                "se": c.se,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "z": c.z,
                "p_value": c.p_value,
                "p_holm": p_holm,
                "ratio": c.ratio,
                "ratio_se": c.ratio_se,
                "ratio_ci_low": c.ratio_ci_low,
                "ratio_ci_high": c.ratio_ci_high,
            }
            for c, p_holm in zip(comps, adjusted)
        ]
        clean = [{key: _json_number(v) for key, v in row.items()} for row in scores + pairs]
        return {"level": self.level, "n_pos": self.n_pos, "n_neg": self.n_neg, "scores": clean[:k], "pairs": clean[k:]}


def delong(y_true, scores, level: float = 0.95) -> DeLongResult:
    """AUCs of one or more scores on the same cases, with their DeLong covariance.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        Truth, 0/1 or bool; 1 (True) is the positive class.
    scores : array-like of shape (n,) or (k, n)
        Scores of k models on the same n cases; a higher score means more likely
        positive. The direction is never flipped.
    level : float, default=0.95
        Confidence level of the intervals, in (0, 1).

    Returns
    -------
    DeLongResult
        ``auc`` (k,), ``cov`` (k, k), ``var``, ``se``, ``ci`` (k, 2), and
        ``compare(i, j)`` for the paired test and AUC ratio of two models.

    Raises
    ------
    CxrError (a ValueError)
        Non-finite scores, labels other than 0/1, mismatched shapes, or fewer than two
        cases of either class (the covariance is undefined then).

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson, "Comparing the areas under
       two or more correlated receiver operating characteristic curves: a nonparametric
       approach", Biometrics 44(3):837-845, 1988.
    .. [2] X. Sun, W. Xu, "Fast implementation of DeLong's algorithm for comparing the
       areas under correlated receiver operating characteristic curves", IEEE Signal
       Processing Letters 21(11):1389-1393, 2014.
    .. [3] X. Robin et al., "pROC: an open-source package for R and S+ to analyze and
       compare ROC curves", BMC Bioinformatics 12:77, 2011.

    Examples
    --------
    >>> res = delong([0, 0, 1, 1, 1], [[0.1, 0.4, 0.35, 0.8, 0.9], [0.2, 0.1, 0.3, 0.4, 0.3]])
    >>> res.auc
    array([0.83333333, 1.        ])
    """
    level = _check_level(level)
    y = _check_truth(y_true)
    s = _check_scores(scores, len(y))
    auc, cov = _auc_cov(y, s)
    n_pos = int(np.count_nonzero(y))
    return DeLongResult(auc=auc, cov=cov, level=level, n_pos=n_pos, n_neg=len(y) - n_pos)


def delong_unpaired(y1, s1, y2, s2, level: float = 0.95) -> PairedComparison:
    """DeLong test of two AUCs measured on different cases (pROC's unpaired test).

    Parameters
    ----------
    y1, s1 : array-like of shape (n1,)
        Truth and scores of model ``a`` (index 0).
    y2, s2 : array-like of shape (n2,)
        Truth and scores of model ``b`` (index 1).
    level : float, default=0.95
        Confidence level of the intervals.

    Returns
    -------
    PairedComparison
        ``diff = A1 - A2`` with ``se = sqrt(V1 + V2)`` and ``cov = 0``. As in pROC's
        ``roc.test(paired = FALSE, method = "delong")``, ``z`` is referred to a t
        distribution whose Welch-Satterthwaite degrees of freedom are in ``df``
        (``(V1 + V2)^2 / (V1^2 / (n1 - 1) + V2^2 / (n2 - 1))``); the intervals use it too.

    References
    ----------
    .. [1] X. Robin et al., "pROC: an open-source package for R and S+ to analyze and
       compare ROC curves", BMC Bioinformatics 12:77, 2011 (``roc.test``).
    """
    r1, r2 = delong(y1, s1, level), delong(y2, s2, level)
    for name, r in (("s1", r1), ("s2", r2)):
        if len(r.auc) != 1:
            raise CxrError(f"{name} must hold one model's scores (shape (n,)), got {len(r.auc)} rows")
    v1, v2 = float(r1.cov[0, 0]), float(r2.cov[0, 0])
    n1, n2 = r1.n_pos + r1.n_neg, r2.n_pos + r2.n_neg
    denom = v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1)
    df = (v1 + v2) ** 2 / denom if denom > 0 else math.inf
    return _comparison(0, 1, r1.auc[0], r2.auc[0], v1, v2, 0.0, r1.level, df=df)


# ------------------------------------------------------------------------- internals
def _auc_cov(y: np.ndarray, s: np.ndarray):
    """The AUCs (k,) and their DeLong covariance (k, k), exact with ties.

    One sort per row (:func:`_sort_rows`). In sorted order, a tie group's positives each
    beat the negatives below the group and tie with those inside it; twice that count,
    ``2 * below + tied = below + (below + tied)``, is an integer, so the AUC is one
    exact integer sum divided once and can never leave [0, 1]. The placements are these
    counts scaled: V10 = count / (2 n), V01 = 1 - count / (2 m).
    """
    k, n = s.shape
    # counts and flat positions in int32 when they fit: half the memory traffic
    count = np.int32 if max(2, k) * n < _INT32_MAX else np.int64
    order, flat, opens = _sort_rows(s)
    pos_sorted = y[order]  # (k, n): is the case at this sorted position positive?
    neg_sorted = ~pos_sorted
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    pos_upto = np.cumsum(pos_sorted, axis=1, dtype=count)  # positives at or before
    neg_upto = np.arange(1, n + 1, dtype=count) - pos_upto  # negatives at or before
    if opens.all():  # no ties: a case beats exactly the cases of the other class below it
        twice = np.where(neg_sorted, pos_upto, neg_upto)
        twice += twice
    else:  # tie groups as flat [start, stop) over the k rows; a row always opens a group
        start = np.flatnonzero(opens)
        last = np.append(start[1:], k * n) - 1
        pos_upto, neg_upto = pos_upto.ravel(), neg_upto.ravel()
        pos_flat, neg_flat = pos_sorted.ravel(), neg_sorted.ravel()
        size = np.diff(start, append=k * n)
        # (other class below the group) + (other class below or inside the group)
        twice_pos = np.repeat(neg_upto[start] - neg_flat[start] + neg_upto[last], size).reshape(k, n)
        twice_neg = np.repeat(pos_upto[start] - pos_flat[start] + pos_upto[last], size).reshape(k, n)
        twice = np.where(neg_sorted, twice_neg, twice_pos)
    # twice is, per sorted case, twice its placement count: cases of the other class that it
    # beats (a positive) or that beat it (a negative), ties counted one half

    placed = np.empty(k * n, dtype=count)
    placed[flat.ravel()] = twice.ravel()
    placed = placed.reshape(k, n)
    pos_twice = np.compress(y, placed, axis=1)  # much faster than placed[:, y]
    neg_twice = np.compress(~y, placed, axis=1)
    auc = pos_twice.sum(axis=1, dtype=np.int64) / (2.0 * n_pos * n_neg)
    v10 = pos_twice / (2.0 * n_neg)
    v01 = 1.0 - neg_twice / (2.0 * n_pos)
    cov = _covariance(v10) / n_pos + _covariance(v01) / n_neg
    return np.clip(auc, 0.0, 1.0), cov


def _sort_rows(s: np.ndarray):
    """Sort each row once: the permutation ``order``, as flat positions ``flat``, and ``opens``.

    ``opens[r, i]`` is True where sorted position i of row r starts a new tie group.

    Why not ``np.argsort``: sorting plain integers is about twice as fast. Each score becomes a
    uint64 key that sorts like the score (:func:`_sort_keys`) and whose low ``b`` bits are
    replaced by the case index (``2**b >= n``), so one ``np.sort`` yields the permutation.
    Keys that differ above those bits are different scores in the right order; keys that
    agree there ("blocks") are equal scores, or, rarely, scores closer than about
    ``2**(b - 52)`` relative, which sit in case order. Only blocks are looked at again: when
    few, by gathering and sorting their scores exactly; when many (heavy ties), by gathering
    every sorted score once, re-sorting the blocks found out of order, and comparing neighbours.
    """
    k, n = s.shape
    offsets = (np.arange(k) * n)[:, None]
    bits = max(1, (n - 1).bit_length())
    keys = _sort_keys(s) if bits <= 40 else None
    if keys is None:  # exotic dtype or > 10^12 cases: plain argsort keeps every key bit
        order = np.argsort(s, axis=1)
        flat = order + offsets
        s_sorted = s.ravel()[flat]
        opens = np.empty((k, n), dtype=bool)
        opens[:, 0] = True
        np.not_equal(s_sorted[:, 1:], s_sorted[:, :-1], out=opens[:, 1:])
        return order, flat, opens
    low = np.uint64((1 << bits) - 1)
    keys &= ~low
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort(axis=1)
    order = (keys & low).view(np.int64)
    flat = order + offsets if k > 1 else order
    opens = np.empty((k, n), dtype=bool)
    opens[:, 0] = True
    np.greater(keys[:, 1:] ^ keys[:, :-1], low, out=opens[:, 1:])  # a new block starts here
    del keys
    in_blocks = k * n - int(np.count_nonzero(opens))
    if in_blocks == 0:  # every score distinct
        return order, flat, opens
    s_flat, flat_flat, opens_flat = s.ravel(), flat.ravel(), opens.ravel()
    if in_blocks * 8 < k * n:
        inner = np.flatnonzero(~opens_flat)  # positions that continue a block
        run = np.empty(len(inner), dtype=bool)
        run[0] = True
        np.not_equal(inner[1:] - 1, inner[:-1], out=run[1:])
        lo, hi = inner[run] - 1, inner[np.append(run[1:], True)] + 1
        where, first, values = _sort_blocks(s_flat, flat_flat, lo, hi)
        first[1:] |= values[1:] != values[:-1]
        opens_flat[where] = first
        fixed = True
    else:
        s_sorted = s_flat[flat_flat]
        bad = np.flatnonzero((s_sorted[1:] < s_sorted[:-1]) & ~opens_flat[1:])
        if len(bad):
            starts = np.flatnonzero(opens_flat)
            block = np.unique(np.searchsorted(starts, bad, "right") - 1)
            lo, hi = starts[block], np.append(starts, k * n)[block + 1]
            where, _, values = _sort_blocks(s_flat, flat_flat, lo, hi)
            s_sorted[where] = values
        fixed = len(bad) > 0
        np.not_equal(s_sorted[1:], s_sorted[:-1], out=opens_flat[1:])
        opens[:, 0] = True
    if fixed and k > 1:  # (for one row, order is flat and was permuted with it)
        order = flat - offsets
    return order, flat, opens


def _sort_blocks(s_flat, flat, lo, hi):
    """Sort the scores of the sorted ranges ``[lo, hi)`` exactly, permuting ``flat`` in place.

    Returns the positions covered, a flag for each range's first position, and the sorted scores.
    """
    size = hi - lo
    ends = np.cumsum(size)
    where = np.arange(ends[-1]) + np.repeat(lo - ends + size, size)
    block = np.repeat(np.arange(len(lo)), size)
    values = s_flat[flat[where]]
    perm = np.lexsort((values, block))
    flat[where] = flat[where][perm]
    first = np.zeros(len(where), dtype=bool)
    first[ends - size] = True
    return where, first, values[perm]


def _sort_keys(s: np.ndarray):
    """uint64 keys, a new (k, n) array, that sort like ``s``, equal keys for equal scores.

    None for dtypes that do not fit (float128). Floats: the IEEE bits with the sign bit
    flipped for positives and every bit flipped for negatives, after ``+ 0.0`` turns -0.0
    (equal to 0.0) into 0.0.
    """
    kind, size = s.dtype.kind, s.dtype.itemsize
    if kind == "f" and size <= 8:
        value = np.add(s, 0.0, dtype=np.float64).view(np.int64)
        keys = value >> 63  # -1 for negatives, 0 otherwise
        keys |= _SIGN
        keys ^= value
    elif kind == "i":
        keys = s.astype(np.int64)
        keys ^= _SIGN
    elif kind == "u":
        return s.astype(np.uint64)
    else:
        return None
    return keys.view(np.uint64)


def _covariance(v: np.ndarray) -> np.ndarray:
    """Sample covariance (denominator count - 1) between the rows of ``v``."""
    centred = v - v.mean(axis=1, keepdims=True)
    return centred @ centred.T / (v.shape[1] - 1)


def _comparison(a, b, auc_a, auc_b, var_a, var_b, cov_ab, level, df=math.inf) -> PairedComparison:
    auc_a, auc_b, var_a, var_b, cov_ab = map(float, (auc_a, auc_b, var_a, var_b, cov_ab))
    diff = auc_a - auc_b
    se = math.sqrt(max(var_a + var_b - 2.0 * cov_ab, 0.0))
    if se > 0:
        z = diff / se
    else:  # identical placements: pROC reports z = 0 for a zero difference
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    if math.isinf(df):
        crit, p = _z_crit(level), math.erfc(abs(z) / math.sqrt(2.0))  # = 2 * Phi(-|z|)
    else:
        from scipy.special import stdtr, stdtrit

        crit, p = float(-stdtrit(df, (1.0 - level) / 2.0)), float(2.0 * stdtr(df, -abs(z)))
    if auc_b > 0:
        ratio = auc_a / auc_b
        ratio_var = var_a / auc_b**2 + auc_a**2 * var_b / auc_b**4 - 2.0 * auc_a * cov_ab / auc_b**3
        ratio_se = math.sqrt(max(ratio_var, 0.0))
    else:  # undefined, not an error: the difference and its test still stand
        ratio = ratio_se = math.nan
    return PairedComparison(
        a=a,
        b=b,
        diff=diff,
        se=se,
        ci_low=diff - crit * se,
        ci_high=diff + crit * se,
        z=z,
        p_value=p,
        cov=cov_ab,
        ratio=ratio,
        ratio_se=ratio_se,
        ratio_ci_low=ratio - crit * ratio_se,
        ratio_ci_high=ratio + crit * ratio_se,
        level=level,
        df=df,
    )


def _json_number(value):
    """Plain Python scalars for ``json.dumps``; NaN and inf (not valid JSON) become None."""
    if isinstance(value, str):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _z_crit(level: float) -> float:
    return NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)


def _check_level(level) -> float:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise CxrError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < level < 1.0:
        raise CxrError(f"level must be in (0, 1), got {level!r}")
    return level


def _check_truth(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise CxrError(f"y_true must have shape (n,), got shape {y.shape}")
    if y.dtype.kind != "b":
        if y.dtype.kind not in "iuf":
            raise CxrError(f"y_true must hold 0/1 labels, got dtype {y.dtype}")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            others = np.unique(y[bad])[:5].tolist()
            raise CxrError(f"y_true must hold only 0/1 labels, found {others}")
        y = y == 1
    n_pos = int(np.count_nonzero(y))
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise CxrError(f"y_true holds a single class ({n_pos} positive, {n_neg} negative cases): the AUC needs both")
    if n_pos < 2 or n_neg < 2:
        raise CxrError(
            f"DeLong's covariance needs at least 2 positive and 2 negative cases, "
            f"got {n_pos} positive and {n_neg} negative"
        )
    return y


def _check_scores(scores, n: int) -> np.ndarray:
    try:
        s = np.asarray(scores)
    except ValueError:  # ragged rows
        raise CxrError(
            f"scores must have shape ({n},) or (k, {n}) to match y_true; its rows differ in length"
        ) from None
    if s.dtype.kind == "b":
        s = s.astype(np.uint8)
    elif s.dtype.kind not in "iuf":
        try:
            s = s.astype(np.float64)
        except (TypeError, ValueError):
            raise CxrError(f"scores must be numbers, got dtype {s.dtype}") from None
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != n:
        raise CxrError(f"scores must have shape ({n},) or (k, {n}) to match y_true, got shape {np.shape(scores)}")
    if s.shape[0] == 0:
        raise CxrError("scores hold no model (shape (0, n))")
    if s.dtype.kind == "f":
        finite = np.isfinite(s)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1)).tolist()
            raise CxrError(
                f"scores hold {int((~finite).sum())} NaN or infinite values "
                f"(model rows {rows}); all scores must be finite"
            )
    return s


def _model_index(i, k: int) -> int:
    try:
        i = operator.index(i)
    except TypeError:
        raise CxrError(f"model index must be an integer, got {i!r}") from None
    if not -k <= i < k:
        raise CxrError(f"model index {i} is out of range for {k} models")
    return i % k
