"""The published numbers this benchmark reproduces, in one place, and ours beside them.

Sabottke & Spieler report, for two findings, the AUC at 64 px and at 320 px and their ratio
with a DeLong SD (abstract; FACTS.md). :func:`paper_table` puts a study's pooled values for
the same cells next to them and says whether our ratio's confidence interval overlaps
theirs (their ratio +/- 1.96 SD): with different data, training and seeds, agreement within
the uncertainties is what "reproduced" can mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from monai_cxr.stats import pooled_difference

CITATION = (
    "Sabottke CF, Spieler BM. The Effect of Image Resolution on Deep Learning in Radiography. "
    "Radiol Artif Intell 2020;2(1):e190015. doi:10.1148/ryai.2019190015"
)
SHORT_CITATION = "Sabottke & Spieler (2020)"
Z95 = 1.959964


def _key(name: str) -> str:
    """Labels match ignoring case and ``_`` versus space (``nodule`` is the paper's Nodule)."""
    return " ".join(str(name).replace("_", " ").casefold().split())


@dataclass(frozen=True)
class Published:
    """One finding's published AUCs at a low and a high resolution, and their ratio +/- SD."""

    label: str
    low: int
    high: int
    auc_low: float
    auc_high: float
    ratio: float
    ratio_sd: float


PUBLISHED = (
    Published("Nodule", 64, 320, 0.689, 0.854, 0.807, 0.015),
    Published("Mass", 64, 320, 0.767, 0.886, 0.867, 0.012),
)

PAPER_COLUMNS = [
    "label",
    "task",
    "arch",
    "fold",
    "n_seeds_low",
    "n_seeds_high",
    "resolution_low",
    "resolution_high",
    "auc_low",
    "auc_low_se",
    "auc_high",
    "auc_high_se",
    "ratio",
    "ratio_se",
    "ratio_ci_low",
    "ratio_ci_high",
    "paper_auc_low",
    "paper_auc_high",
    "paper_ratio",
    "paper_ratio_sd",
    "paper_ratio_low",
    "paper_ratio_high",
    "within",
]


def paper_table(groups: dict, level: float = 0.95):
    """Our pooled 64 px vs 320 px values beside the published ones, one row per label x task x arch.

    Parameters
    ----------
    groups : dict
        ``{(label, task, arch): Group}`` from :func:`monai_cxr.report.tables.groups` (usable groups only).

    Returns
    -------
    DataFrame with :data:`PAPER_COLUMNS`; empty when the study has none of the paper's cells.
    ``within`` is True when our ratio's CI overlaps the published ratio +/- 1.96 SD.
    """
    rows = []
    for group in groups.values():
        label, arch = group.label, group.arch
        pub = next((p for p in PUBLISHED if _key(p.label) == _key(label)), None)
        if pub is None or not {pub.low, pub.high} <= set(group.scores):
            continue
        d = pooled_difference(group.y, group.scores[pub.low], group.scores[pub.high], level=level)
        lo_se, hi_se = (group.pooled[r].auc_se for r in (pub.low, pub.high))
        low, high = pub.ratio - Z95 * pub.ratio_sd, pub.ratio + Z95 * pub.ratio_sd
        within = bool(d.ratio_ci_low <= high and d.ratio_ci_high >= low) if not math.isnan(d.ratio) else None
        rows.append(
            {
                "label": label,
                "task": group.task,
                "arch": arch,
                "fold": group.fold,
                "n_seeds_low": d.n_seeds_a,
                "n_seeds_high": d.n_seeds_b,
                "resolution_low": pub.low,
                "resolution_high": pub.high,
                "auc_low": d.auc_a,
                "auc_low_se": lo_se,
                "auc_high": d.auc_b,
                "auc_high_se": hi_se,
                "ratio": d.ratio,
                "ratio_se": d.ratio_se,
                "ratio_ci_low": d.ratio_ci_low,
                "ratio_ci_high": d.ratio_ci_high,
                "paper_auc_low": pub.auc_low,
                "paper_auc_high": pub.auc_high,
                "paper_ratio": pub.ratio,
                "paper_ratio_sd": pub.ratio_sd,
                "paper_ratio_low": low,
                "paper_ratio_high": high,
                "within": within,
            }
        )
    return pd.DataFrame(rows, columns=PAPER_COLUMNS)
