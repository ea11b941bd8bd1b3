"""Adjusting p-values for multiple comparisons (a study compares many resolution pairs)."""

from __future__ import annotations

import numpy as np

from monai_cxr.errors import CxrError

__all__ = ["holm"]


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, the same as R's ``p.adjust(p, "holm")``.

    Holm's procedure controls the family-wise error rate under any dependence between
    the tests, which paired comparisons on the same cases have, and is uniformly more
    powerful than Bonferroni.

    Parameters
    ----------
    p_values : array-like of shape (n,)
        Unadjusted p-values in [0, 1]; NaN is kept as NaN and not counted (as in R).

    Returns
    -------
    ndarray of shape (n,)
        Adjusted p-values in the input order: ``max_{j <= i} min(1, (n - j + 1) p_(j))``
        over the sorted p-values, so they are monotone in the unadjusted ones.

    References
    ----------
    .. [1] S. Holm, "A simple sequentially rejective multiple test procedure",
       Scandinavian Journal of Statistics 6(2):65-70, 1979.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise CxrError(f"p_values must have shape (n,), got shape {p.shape}")
    known = ~np.isnan(p)
    if ((p[known] < 0) | (p[known] > 1)).any():
        raise CxrError(f"p-values must be in [0, 1], got {p[known][(p[known] < 0) | (p[known] > 1)][:5].tolist()}")
    out = np.full_like(p, np.nan)
    q = p[known]
    order = np.argsort(q, kind="stable")
    m = len(q)
    steps = np.minimum((m - np.arange(m)) * q[order], 1.0)
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps)
    out[known] = adjusted
    return out
