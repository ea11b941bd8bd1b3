"""The report's tables: one row per finished cell, and paired tests between resolutions.

``summary_table``: AUC with its DeLong standard error and confidence interval, the
accuracy at a 0.5 threshold and at the Youden threshold, and what the run cost.

``comparison_table``: within each label x architecture x seed, every resolution against
the reference resolution and each resolution against its next higher neighbour. Two
cells validated on the same images are compared with the paired DeLong test (their
predictions joined on ``image_id``); otherwise with the unpaired test, and the ``paired``
column says so. ``p_holm`` is Holm-adjusted within a label: the family is every test of
that label in the table (all architectures, seeds, reference and neighbour rows), each
pair tested once.

``best_table``: for each label x architecture x seed, the resolution with the highest
AUC tested against every other resolution, Holm-adjusted within that group.

Columns that need a word (``summary.csv``):
    n_pos, n_neg          validation images of each class (the DeLong m and n)
    auc_se, auc_ci_*      DeLong SE; 95% CI = AUC +/- 1.96 SE clipped to [0, 1] (pROC)
    accuracy_050          accuracy when score >= 0.5 means positive
    accuracy_youden       accuracy at ``youden_threshold`` (score >= t), the cut point that
                          maximises sensitivity + specificity - 1 on the same images
    note                  why AUC or SE is blank (one class, or < 2 of a class), else empty
Columns that need a word (``comparisons.csv``):
    resolution_a, _b      a is tested against b: b is the reference (kind "reference") or
                          the next larger resolution (kind "neighbour")
    paired, n_cases       paired test on the n_cases shared images, or unpaired (n_cases
                          is then the sum of both cells' images)
    diff, diff_se, ...    auc_a - auc_b, its SE and 95% CI; z and two-sided p_value
    ratio, ratio_se, ...  auc_a / auc_b, delta-method SE and 95% CI (the paper's
                          "AUC ratio +/- SD")
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from monai_cxr.errors import CxrError
from monai_cxr.report.load import Cell
from monai_cxr.stats import delong, delong_unpaired, holm

SUMMARY_COLUMNS = [
    "label", "arch", "resolution", "seed", "n_pos", "n_neg", "auc", "auc_se", "auc_ci_low",
    "auc_ci_high", "accuracy_050", "accuracy_youden", "youden_threshold", "batch_size",
    "images_per_s", "peak_mem_mb", "train_seconds", "epochs", "best_epoch", "device", "note",
]
COMPARISON_COLUMNS = [
    "label", "arch", "seed", "resolution_a", "resolution_b", "kind", "paired", "n_cases",
    "auc_a", "auc_b", "diff", "diff_se", "diff_ci_low", "diff_ci_high", "z", "p_value", "p_holm",
    "ratio", "ratio_se", "ratio_ci_low", "ratio_ci_high",
]
BEST_COLUMNS = [
    "label", "arch", "seed", "best_resolution", "auc", "better_than", "not_different_from",
    "min_p_holm", "max_p_holm",
]
RUN_FIELDS = ("batch_size", "images_per_s", "peak_mem_mb", "train_seconds", "epochs",
              "best_epoch", "device")
DEFAULT_REFERENCE = 320


def _usable(pred) -> str:
    """Empty if DeLong applies to these predictions, else why not (the summary's note)."""
    n_pos = int(pred["label"].sum())
    n_neg = len(pred) - n_pos
    if n_pos == 0:
        return "no positives in val: AUC undefined"
    if n_neg == 0:
        return "no negatives in val: AUC undefined"
    if n_pos < 2 or n_neg < 2:
        return f"{n_pos} positive / {n_neg} negative in val: DeLong SE undefined"
    return ""


def _youden(y: np.ndarray, s: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (predict positive when s >= t)."""
    fpr, tpr, thresholds = roc_curve(y, s)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def cell_metrics(pred, level: float = 0.95) -> dict:
    """AUC (DeLong SE and CI) and accuracies of one cell's predictions."""
    y = pred["label"].to_numpy()
    s = pred["score"].to_numpy()
    n_pos = int(y.sum())
    out = {"n_pos": n_pos, "n_neg": len(y) - n_pos, "auc": math.nan, "auc_se": math.nan,
           "auc_ci_low": math.nan, "auc_ci_high": math.nan,
           "accuracy_050": float(np.mean((s >= 0.5) == y)) if len(y) else math.nan,
           "accuracy_youden": math.nan, "youden_threshold": math.nan, "note": _usable(pred)}
    if 0 < n_pos < len(y):
        threshold = _youden(y, s)
        out["youden_threshold"] = threshold
        out["accuracy_youden"] = float(np.mean((s >= threshold) == y))
        if out["note"]:  # both classes, but too few for DeLong: the AUC alone

            out["auc"] = float(roc_auc_score(y, s))
        else:
            r = delong(y, s, level=level)
            out.update(auc=float(r.auc[0]), auc_se=float(r.se[0]),
                       auc_ci_low=float(r.ci[0, 0]), auc_ci_high=float(r.ci[0, 1]))
    return out


def summary_table(cells: list[Cell], level: float = 0.95):
    """One row per finished cell, sorted by label, arch, seed, resolution."""
    rows = []
    for cell in cells:
        row = {"label": cell.label, "arch": cell.arch, "resolution": cell.resolution,
               "seed": cell.seed}
        row.update(cell_metrics(cell.predictions, level))
        row.update({k: cell.run.get(k) for k in RUN_FIELDS})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["label", "arch", "seed", "resolution"], ignore_index=True)


def compare_cells(a: Cell, b: Cell, level: float = 0.95) -> dict:
    """DeLong test of cell ``a`` against cell ``b``: paired when they share every case."""
    ids_a, ya, sa = a.arrays
    ids_b, yb, sb = b.arrays
    if np.array_equal(ids_a, ids_b):  # both in image_id order: the same cases, row by row
        if not np.array_equal(ya, yb):
            bad = ids_a[np.flatnonzero(ya != yb)[0]]
            raise CxrError(f"cells {a.name} and {b.name} disagree on the truth of image {bad!r}")
        r = delong(ya, np.vstack([sa, sb]), level=level)
        c, auc_a, auc_b, paired, n_cases = r.compare(0, 1), r.auc[0], r.auc[1], True, len(ya)
    else:
        c = delong_unpaired(ya, sa, yb, sb, level=level)
        auc_a = delong(ya, sa).auc[0]
        auc_b = auc_a - c.diff
        paired, n_cases = False, len(ya) + len(yb)
    return {"paired": paired, "n_cases": n_cases, "auc_a": float(auc_a), "auc_b": float(auc_b),
            "diff": c.diff, "diff_se": c.se, "diff_ci_low": c.ci_low, "diff_ci_high": c.ci_high,
            "z": c.z, "p_value": c.p_value, "ratio": c.ratio, "ratio_se": c.ratio_se,
            "ratio_ci_low": c.ratio_ci_low, "ratio_ci_high": c.ratio_ci_high}


def reference_for(resolutions, requested: int | None = None) -> int:
    """The reference resolution of a group: the requested one (default 320) where it was
    run, else the highest."""
    want = DEFAULT_REFERENCE if requested is None else requested
    return want if want in resolutions else max(resolutions)


def check_reference(cells: list[Cell], reference_resolution: int | None) -> None:
    """A requested reference resolution must be among the finished cells' resolutions."""
    if reference_resolution is not None:
        run = sorted({c.resolution for c in cells})
        if reference_resolution not in run:
            raise CxrError(f"--reference-resolution {reference_resolution} was not run; "
                           f"finished resolutions: {', '.join(map(str, run))}")


def _groups(cells: list[Cell]):
    """Usable finished cells grouped by (label, arch, seed), each sorted by resolution."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        if not _usable(cell.predictions):
            groups.setdefault((cell.label, cell.arch, cell.seed), []).append(cell)
    return {k: sorted(v, key=lambda c: c.resolution) for k, v in sorted(groups.items())}


def pairs_to_test(resolutions: list[int], reference: int) -> list[tuple[int, int, str]]:
    """(a, b, kind): each resolution against the reference, then each against its higher
    neighbour unless that pair is already a reference row (each pair is tested once)."""
    out = [(r, reference, "reference") for r in resolutions if r != reference]
    seen = {frozenset(p[:2]) for p in out}
    for lo, hi in zip(resolutions, resolutions[1:]):
        if frozenset((lo, hi)) not in seen:
            out.append((lo, hi, "neighbour"))
    return out


def add_holm(frame, by: str = "label"):
    """Set ``p_holm``: ``p_value`` Holm-adjusted within each ``by`` group (NaN stays NaN)."""
    frame["p_holm"] = np.nan
    for _, index in frame.groupby(by, sort=False).groups.items():
        frame.loc[index, "p_holm"] = holm(frame.loc[index, "p_value"].to_numpy(dtype=float))  # NaN-aware
    return frame


def comparison_table(cells: list[Cell], reference_resolution: int | None = None,
                     level: float = 0.95):
    """Paired DeLong tests between resolutions, with Holm-adjusted p-values per label."""
    check_reference(cells, reference_resolution)
    rows = []
    for (label, arch, seed), group in _groups(cells).items():
        by_res = {c.resolution: c for c in group}
        reference = reference_for(list(by_res), reference_resolution)
        for a, b, kind in pairs_to_test(list(by_res), reference):
            row = {"label": label, "arch": arch, "seed": seed, "resolution_a": a,
                   "resolution_b": b, "kind": kind}
            row.update(compare_cells(by_res[a], by_res[b], level))
            rows.append(row)
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    return add_holm(frame) if len(frame) else frame


def best_table(cells: list[Cell], alpha: float = 0.05, level: float = 0.95):
    """The best resolution of each label x arch x seed and whether it beats the others.

    The best cell is tested against every other resolution of its group; the p-values are
    Holm-adjusted within the group, and a resolution is "beaten" when the adjusted p-value
    is below ``alpha``.
    """
    rows = []
    for (label, arch, seed), group in _groups(cells).items():
        aucs = {c.resolution: float(delong(c.arrays[1], c.arrays[2]).auc[0]) for c in group}
        best = max(aucs, key=lambda r: (aucs[r], -r))  # ties go to the lower resolution
        best_cell = next(c for c in group if c.resolution == best)
        others = [c for c in group if c.resolution != best]
        p = [compare_cells(best_cell, c, level)["p_value"] for c in others]
        p_adj = holm(np.asarray(p, dtype=float))
        beaten = [c.resolution for c, q in zip(others, p_adj) if q < alpha]
        tied = [c.resolution for c, q in zip(others, p_adj) if not q < alpha]
        rows.append({"label": label, "arch": arch, "seed": seed, "best_resolution": best,
                     "auc": aucs[best], "better_than": " ".join(map(str, beaten)),
                     "not_different_from": " ".join(map(str, tied)),
                     "min_p_holm": float(np.min(p_adj)) if p else math.nan,
                     "max_p_holm": float(np.max(p_adj)) if p else math.nan})
    return pd.DataFrame(rows, columns=BEST_COLUMNS)
