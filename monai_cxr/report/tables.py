"""The report's tables: per cell, pooled over seeds, comparisons between sizes, and the verdict.

Every AUC is computed on the label's scored fold (``test``, or ``val`` where a label has no
test predictions: optimistic, since val also chose the checkpoint). The cells of one label
are scored on the same images, so every comparison is paired.

``summary_table``: one row per cell: AUC with its DeLong SE and CI, and the operating point
chosen on val (Youden) applied to the scored fold.

``pooled_table``: one row per label x arch x resolution: the seeds' AUCs pooled with
:func:`monai_cxr.stats.pool_seeds` (a t interval with Hillis' df; DeLong's with one seed).

``comparison_table``: pooled comparisons between sizes (:func:`monai_cxr.stats.pooled_difference`):
within each label x arch, every size against the reference size and each size against its next
larger neighbour, each pair once; ``p_holm`` is Holm-adjusted within a label (the family is
every row of that label: all architectures and kinds). With one seed per size this is DeLong's
paired test.

``verdict_table``: one row per label x arch: the best size and the smallest size non-inferior
to it at ``margin`` (:func:`monai_cxr.stats.sufficient_resolution`).

Every table has ``task``: ``binary`` (a network of one finding) or ``multilabel`` (that finding's output of
one network trained for all the grid's labels); rows of the two tasks are never pooled or compared with
each other, so a report puts them side by side.

Columns that need a word (``summary.csv``):
    fold                  the fold the AUC is computed on (``test``, else ``val``)
    n_pos, n_neg          images of each class in that fold (the DeLong m and n)
    auc_se, auc_ci_*      DeLong SE; 95% CI = AUC +/- 1.96 SE clipped to [0, 1] (pROC)
    val_auc               AUC on val, where the checkpoint was chosen (equals ``auc`` when fold is val)
    youden_threshold      the cut point (score >= t is positive) maximising sensitivity +
                          specificity - 1 on val
    sensitivity, specificity, accuracy_youden
                          at ``youden_threshold``, on the scored fold
    accuracy_050          accuracy when score >= 0.5 means positive, on the scored fold
    torch_threads         threads the cell trained with (results differ with it)
    init                  ``scratch`` or the pretrained source the cell started from
    note                  why AUC or SE is blank (one class, or < 2 of a class), else empty
Columns that need a word (``pooled.csv``):
    n_seeds, seeds        the seeds pooled
    auc_mean, auc_sd      mean and sample SD of the seeds' AUCs (SD blank for one seed)
    auc_se, df            SE of the mean (test-sample covariance shared by seeds + between-seed
                          variance / S) and its Hillis degrees of freedom (inf for one seed)
    auc_ci_*              auc_mean +/- t(df) SE, clipped to [0, 1]
Columns that need a word (``comparisons.csv``):
    resolution_a, _b      a is tested against b: b is the reference (kind "reference") or
                          the next larger size (kind "neighbour")
    diff, diff_se, ...    pooled auc_a - auc_b, its SE, 95% CI and df; z = diff / diff_se and the
                          two-sided p_value from t(df) (normal when df is inf)
    ratio, ratio_se, ...  auc_a / auc_b, delta-method SE and 95% CI (the paper's "AUC ratio +/- SD")
Columns that need a word (``verdict.csv``):
    best_resolution       the size with the highest pooled AUC (ties: the smaller)
    sufficient_resolution the smallest size whose pooled AUC is non-inferior to the best one's:
                          one-sided test of H0 AUC_best - AUC_r >= margin, Holm-adjusted over the
                          label x arch's sizes, rejected at alpha; the best size when none is
    p_value, p_holm       that test's one-sided p-value for ``sufficient_resolution``, unadjusted
                          and Holm-adjusted (blank when it is the best size)
    non_inferior          every size whose adjusted p-value is below alpha

Over 400 lines: one function per table (summary, pooled, comparisons, verdict), sharing the
fold alignment helpers; the column documentation below is long on purpose.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from monai_cxr.errors import CxrError
from monai_cxr.report.load import FindingResult, Study
from monai_cxr.stats import (
    delong,
    holm,
    pool_seeds,
    pooled_difference,
    sufficient_resolution,
)

SUMMARY_COLUMNS = [
    "label",
    "task",
    "arch",
    "resolution",
    "seed",
    "fold",
    "n_pos",
    "n_neg",
    "auc",
    "auc_se",
    "auc_ci_low",
    "auc_ci_high",
    "val_auc",
    "youden_threshold",
    "sensitivity",
    "specificity",
    "accuracy_youden",
    "accuracy_050",
    "batch_size",
    "images_per_s",
    "peak_mem_mb",
    "train_seconds",
    "epochs",
    "best_epoch",
    "torch_threads",
    "device",
    "init",
    "learning_rate",
    "note",
]
POOLED_COLUMNS = [
    "label",
    "task",
    "arch",
    "resolution",
    "fold",
    "n_seeds",
    "seeds",
    "n_pos",
    "n_neg",
    "auc_mean",
    "auc_sd",
    "auc_se",
    "auc_ci_low",
    "auc_ci_high",
    "df",
    "note",
]
COMPARISON_COLUMNS = [
    "label",
    "task",
    "arch",
    "fold",
    "resolution_a",
    "resolution_b",
    "kind",
    "n_seeds_a",
    "n_seeds_b",
    "n_cases",
    "auc_a",
    "auc_b",
    "diff",
    "diff_se",
    "diff_ci_low",
    "diff_ci_high",
    "df",
    "z",
    "p_value",
    "p_holm",
    "ratio",
    "ratio_se",
    "ratio_ci_low",
    "ratio_ci_high",
]
VERDICT_COLUMNS = [
    "label",
    "task",
    "arch",
    "fold",
    "n_seeds",
    "resolutions",
    "best_resolution",
    "auc_best",
    "auc_best_se",
    "sufficient_resolution",
    "auc_sufficient",
    "auc_sufficient_se",
    "diff",
    "diff_se",
    "margin",
    "alpha",
    "p_value",
    "p_holm",
    "non_inferior",
    "note",
]
RUN_FIELDS = (
    "batch_size",
    "images_per_s",
    "peak_mem_mb",
    "train_seconds",
    "epochs",
    "best_epoch",
    "torch_threads",
    "device",
    "learning_rate",
)
DEFAULT_REFERENCE = 320
DEFAULT_MARGIN = 0.02


def shown_arch(arch: str, task: str = "binary") -> str:
    """An architecture as figures and report.md name it: ``resnet34``, or ``resnet34 (multilabel)``."""
    return str(arch) if task == "binary" else f"{arch} ({task})"


def shown_archs(frame):
    """``frame`` with each multi-label row's ``arch`` as :func:`shown_arch` names it, for figures and report.md."""
    if not len(frame) or "task" not in frame.columns or (frame["task"] == "binary").all():
        return frame
    return frame.assign(arch=[shown_arch(a, t) for a, t in zip(frame["arch"], frame["task"])])


def check_margin(margin) -> float:
    """The non-inferiority margin in AUC: a number in (0, 1)."""
    try:
        value = float(margin)
    except (TypeError, ValueError):
        raise CxrError(f"margin {margin!r} is not a number; give an AUC difference in (0, 1), e.g. 0.02") from None
    if not 0.0 < value < 1.0:  # NaN fails too
        raise CxrError(f"margin {margin!r} is not in (0, 1); give an AUC difference, e.g. 0.02")
    return value


def usable(y) -> str:
    """Empty if DeLong applies to this truth, else why not (the tables' note)."""
    n_pos = int(np.sum(y))
    n_neg = len(y) - n_pos
    if n_pos == 0:
        return "no positives: AUC undefined"
    if n_neg == 0:
        return "no negatives: AUC undefined"
    if n_pos < 2 or n_neg < 2:
        return f"{n_pos} positive / {n_neg} negative: DeLong SE undefined"
    return ""


def youden_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (predict positive when s >= t)."""
    fpr, tpr, thresholds = roc_curve(y, s)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def init_source(run: dict) -> str | None:
    """``scratch`` or the pretrained source recorded in ``run.json["init"]``; None if not recorded."""
    init = run.get("init")
    if isinstance(init, dict):
        return str(init.get("source", "")) or None
    return str(init) if init else None


def cell_metrics(cell: FindingResult, fold: str, level: float = 0.95) -> dict:
    """AUC (DeLong SE and CI) on ``fold``, and the val-chosen operating point applied to it."""
    _, y, s = cell.arrays(fold)
    n_pos = int(y.sum())
    note = usable(y)
    out = {
        "fold": fold,
        "n_pos": n_pos,
        "n_neg": len(y) - n_pos,
        "auc": math.nan,
        "auc_se": math.nan,
        "auc_ci_low": math.nan,
        "auc_ci_high": math.nan,
        "val_auc": math.nan,
        "youden_threshold": math.nan,
        "sensitivity": math.nan,
        "specificity": math.nan,
        "accuracy_youden": math.nan,
        "accuracy_050": float(np.mean((s >= 0.5) == y)) if len(y) else math.nan,
        "note": f"{fold}: {note}" if note else "",
    }
    if 0 < n_pos < len(y):
        if note:  # both classes, but too few for DeLong: the AUC alone
            out["auc"] = float(roc_auc_score(y, s))
        else:
            r = delong(y, s, level=level)
            out.update(
                auc=float(r.auc[0]), auc_se=float(r.se[0]), auc_ci_low=float(r.ci[0, 0]), auc_ci_high=float(r.ci[0, 1])
            )
    _, yv, sv = cell.arrays("val")
    if 0 < yv.sum() < len(yv):
        out["val_auc"] = float(roc_auc_score(yv, sv))
        t = youden_threshold(yv, sv)
        out["youden_threshold"] = t
        if n_pos:
            out["sensitivity"] = float(np.mean(s[y == 1] >= t))
        if len(y) - n_pos:
            out["specificity"] = float(np.mean(s[y == 0] < t))
        if len(y):
            out["accuracy_youden"] = float(np.mean((s >= t) == y))
    return out


def summary_table(study: Study, level: float = 0.95):
    """One row per finished cell, sorted by label, arch, seed, resolution."""
    rows = []
    for cell in study.finished:
        row = {
            "label": cell.label,
            "task": cell.task,
            "arch": cell.arch,
            "resolution": cell.resolution,
            "seed": cell.seed,
        }
        row.update(cell_metrics(cell, study.folds[cell.label], level))
        row.update({k: cell.run.get(k) for k in RUN_FIELDS})
        row["init"] = init_source(cell.run)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["label", "task", "arch", "seed", "resolution"], ignore_index=True)


@dataclass
class Group:
    """The cells of one label x task x arch on their scored fold: seeds stacked per resolution."""

    label: str
    arch: str
    fold: str
    ids: np.ndarray
    y: np.ndarray
    scores: dict = field(default_factory=dict)  # resolution -> (S, n) scores, rows in seed order
    seeds: dict = field(default_factory=dict)  # resolution -> [seed, ...]
    pooled: dict = field(default_factory=dict)  # resolution -> PooledAUC (usable groups only)
    task: str = "binary"

    @property
    def shown_arch(self) -> str:
        return shown_arch(self.arch, self.task)

    @property
    def note(self) -> str:
        note = usable(self.y)
        return f"{self.fold}: {note}" if note else ""


def groups(study: Study, level: float = 0.95) -> dict:
    """``{(label, task, arch): Group}`` of the finished cells, sorted; seeds aligned by image_id."""
    out: dict[tuple, Group] = {}
    for cell in sorted(study.finished, key=lambda c: (c.label, c.task, c.arch, c.resolution, c.seed)):
        fold = study.folds[cell.label]
        ids, y, s = cell.arrays(fold)
        group = out.setdefault(
            (cell.label, cell.task, cell.arch), Group(cell.label, cell.arch, fold, ids, y, task=cell.task)
        )
        if not (np.array_equal(ids, group.ids) and np.array_equal(y, group.y)):  # load checked both
            raise CxrError(
                f"cell {cell.name} was scored on other {fold} images than the rest of "
                f"{cell.label!r} x {group.shown_arch}"
            )
        group.seeds.setdefault(cell.resolution, []).append(cell.seed)
        group.scores[cell.resolution] = (
            np.vstack([group.scores[cell.resolution], s]) if cell.resolution in group.scores else s[None, :]
        )
    for group in out.values():
        if not group.note:
            group.pooled = {r: pool_seeds(group.y, block, level=level) for r, block in group.scores.items()}
    return dict(sorted(out.items()))


def pooled_table(groups_: dict):
    """One row per label x task x arch x resolution: the seeds' AUCs pooled."""
    rows = []
    for g in groups_.values():
        for r in sorted(g.scores):
            row = {
                "label": g.label,
                "task": g.task,
                "arch": g.arch,
                "resolution": r,
                "fold": g.fold,
                "n_seeds": len(g.seeds[r]),
                "seeds": " ".join(map(str, g.seeds[r])),
                "n_pos": int(g.y.sum()),
                "n_neg": int(len(g.y) - g.y.sum()),
                "note": g.note,
            }
            p = g.pooled.get(r)
            if p is not None:
                row.update(
                    auc_mean=p.auc_mean,
                    auc_sd=p.auc_sd,
                    auc_se=p.auc_se,
                    auc_ci_low=p.ci_low,
                    auc_ci_high=p.ci_high,
                    df=p.df,
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)


def reference_for(resolutions, requested: int | None = None) -> int:
    """The reference resolution of a group: the requested one (default 320) where it was
    run, else the highest."""
    want = DEFAULT_REFERENCE if requested is None else requested
    return want if want in resolutions else max(resolutions)


def check_reference(cells: list[FindingResult], reference_resolution: int | None) -> None:
    """A requested reference resolution must be among the finished cells' resolutions."""
    if reference_resolution is not None:
        run = sorted({c.resolution for c in cells})
        if reference_resolution not in run:
            raise CxrError(
                f"--reference-resolution {reference_resolution} was not run; "
                f"finished resolutions: {', '.join(map(str, run))}"
            )


def pairs_to_test(resolutions: list[int], reference: int) -> list[tuple[int, int, str]]:
    """(a, b, kind): each resolution against the reference, then each against its higher
    neighbour unless that pair is already a reference row (each pair is tested once)."""
    out = [(r, reference, "reference") for r in resolutions if r != reference]
    seen = {frozenset(p[:2]) for p in out}
    for lo, hi in itertools.pairwise(resolutions):
        if frozenset((lo, hi)) not in seen:
            out.append((lo, hi, "neighbour"))
    return out


def add_holm(frame, by: str = "label"):
    """Set ``p_holm``: ``p_value`` Holm-adjusted within each ``by`` group (NaN stays NaN)."""
    frame["p_holm"] = np.nan
    for index in frame.groupby(by, sort=False).groups.values():
        frame.loc[index, "p_holm"] = holm(frame.loc[index, "p_value"].to_numpy(dtype=float))
    return frame


def comparison_table(groups_: dict, reference_resolution: int | None = None, level: float = 0.95):
    """Pooled paired comparisons between resolutions, Holm-adjusted within each label."""
    rows = []
    for g in groups_.values():
        if g.note:
            continue
        resolutions = sorted(g.scores)
        for a, b, kind in pairs_to_test(resolutions, reference_for(resolutions, reference_resolution)):
            d = pooled_difference(g.y, g.scores[a], g.scores[b], level=level)
            rows.append(
                {
                    "label": g.label,
                    "task": g.task,
                    "arch": g.arch,
                    "fold": g.fold,
                    "resolution_a": a,
                    "resolution_b": b,
                    "kind": kind,
                    "n_seeds_a": d.n_seeds_a,
                    "n_seeds_b": d.n_seeds_b,
                    "n_cases": len(g.y),
                    "auc_a": d.auc_a,
                    "auc_b": d.auc_b,
                    "diff": d.diff,
                    "diff_se": d.se,
                    "diff_ci_low": d.ci_low,
                    "diff_ci_high": d.ci_high,
                    "df": d.df,
                    "z": d.z,
                    "p_value": d.p_value,
                    "ratio": d.ratio,
                    "ratio_se": d.ratio_se,
                    "ratio_ci_low": d.ratio_ci_low,
                    "ratio_ci_high": d.ratio_ci_high,
                }
            )
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    return add_holm(frame) if len(frame) else frame


def verdict_table(groups_: dict, margin: float = DEFAULT_MARGIN, alpha: float = 0.05):
    """Per label x task x arch: the best size and the smallest size non-inferior to it at ``margin``."""
    margin = check_margin(margin)
    rows = []
    for g in groups_.values():
        resolutions = sorted(g.scores)
        row = {
            "label": g.label,
            "task": g.task,
            "arch": g.arch,
            "fold": g.fold,
            "n_seeds": min(len(s) for s in g.seeds.values()),
            "resolutions": " ".join(map(str, resolutions)),
            "margin": margin,
            "alpha": alpha,
            "note": g.note,
        }
        if not g.note:
            v = sufficient_resolution(g.y, g.scores, margin=margin, alpha=alpha)
            best, enough = g.pooled[v.best], g.pooled[v.sufficient]
            test = v.tests.get(v.sufficient)
            row.update(
                best_resolution=v.best,
                auc_best=best.auc_mean,
                auc_best_se=best.auc_se,
                sufficient_resolution=v.sufficient,
                auc_sufficient=enough.auc_mean,
                auc_sufficient_se=enough.auc_se,
                diff=test.diff if test else 0.0,
                diff_se=test.se if test else 0.0,
                p_value=v.p_values[v.sufficient],
                p_holm=v.p_holm[v.sufficient],
                non_inferior=" ".join(str(r) for r in resolutions if v.p_holm[r] < alpha),
            )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    return frame.astype({"best_resolution": "Int64", "sufficient_resolution": "Int64"})
