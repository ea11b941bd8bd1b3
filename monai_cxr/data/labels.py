"""Label columns of ``index.csv``: which columns they are, what a name selects, what counts.

Label columns hold 1 (positive), 0 (negative) or -1 (unknown: CheXpert's uncertain labels
under ``--uncertain ignore``, or a -1 in a user's table); a -1 image is left out of that
label's training and validation, and only of that label's.

Different releases name a finding differently. :data:`ALIASES` is the one place that says
which names are the same finding, so ``--labels Effusion`` selects CheXpert's
``Pleural Effusion`` and ``--labels "Pleural Effusion"`` NIH's ``Effusion``.
"""

from __future__ import annotations

import pandas as pd

from monai_cxr.errors import CxrError

INDEX_COLUMNS = ("image_id", "patient_id", "view", "path")
UNKNOWN = -1

# Each group: names of one finding in NIH ChestX-ray14, CheXpert and MedMNIST spelling.
ALIASES = (
    ("Effusion", "Pleural Effusion"),
    ("Pleural_Thickening", "Pleural Thickening", "pleural"),
)


def _key(name: str) -> str:
    """Case, underscores and repeated spaces do not distinguish labels."""
    return " ".join(str(name).replace("_", " ").casefold().split())


def label_columns(index: pd.DataFrame) -> list[str]:
    """The label columns of an index table: every column after ``image_id, patient_id, view, path``."""
    return [c for c in index.columns if c not in INDEX_COLUMNS]


def resolve_label(name: str, columns) -> str:
    """The column of ``columns`` that label ``name`` selects, or a CxrError listing the labels.

    Exact name first; then the same name ignoring case, ``_`` versus space; then a name of
    the same finding in :data:`ALIASES`.
    """
    columns = list(columns)
    if name in columns:
        return name
    wanted = {_key(name)}
    for group in ALIASES:
        keys = {_key(alias) for alias in group}
        if wanted & keys:
            wanted |= keys
    for tier in ({_key(name)}, wanted):
        found = [c for c in columns if _key(c) in tier]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CxrError(f"label {name!r} matches several columns ({', '.join(found)}); give the exact name")
    raise CxrError(f"unknown label {name!r}; labels of this dataset: {', '.join(columns) or 'none'}")


def fold_counts(index: pd.DataFrame, folds: pd.DataFrame, label: str) -> dict[str, tuple[int, int]]:
    """``{fold: (positives, negatives)}`` of ``label``, unknown (-1) rows left out."""
    values = index[label].to_numpy()
    out = {}
    for fold in ("train", "val", "test"):
        at = folds["fold"].to_numpy() == fold
        if at.any():
            out[fold] = (int((values[at] == 1).sum()), int((values[at] == 0).sum()))
    return out


def empty_folds(index: pd.DataFrame, folds: pd.DataFrame, label: str, needed=("train", "val")) -> list[str]:
    """The folds of ``needed`` where ``label`` has no positive or no negative image."""
    counts = fold_counts(index, folds, label)
    return [f for f in needed if min(counts.get(f, (0, 0))) == 0]


def require_positives(index: pd.DataFrame, folds: pd.DataFrame, label: str, needed=("train", "val")) -> None:
    """Fail with one line when ``label`` cannot be trained or validated: a fold lacks a class."""
    bad = empty_folds(index, folds, label, needed)
    if bad:
        counts = fold_counts(index, folds, label)
        detail = "; ".join(
            f"{f} {counts.get(f, (0, 0))[0]} positive / {counts.get(f, (0, 0))[1]} negative" for f in needed
        )
        raise CxrError(
            f"label {label!r} has no {'positive' if counts.get(bad[0], (0, 0))[0] == 0 else 'negative'} "
            f"image in the {bad[0]} fold ({detail}); choose another label, seed or split"
        )
