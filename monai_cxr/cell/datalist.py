"""A cell's datalist: which cache rows it trains, validates and tests on, with their 0/1 truth.

Entries are ``{"image": row, "label": [y], "image_id": ..., "patient_id": ...}``: ``image`` is
the row of the resize cache (= the row of ``index.csv``), ``label`` a one-channel target. The
lists are ``training``, ``validation`` and ``test`` (empty when the split has no test fold).
Images whose label is unknown (-1, e.g. CheXpert's uncertain labels under ``--uncertain
ignore``) are left out. The file is plain JSON read by ``json``, never by the config parser,
so labels and ids in it are inert data.

A multi-label cell's datalist (:func:`build_multilabel`) has ``label_names`` (the k findings, in output
order) instead of ``label_name``, and each entry's ``label`` is the k-vector of 1, 0 and -1 (unknown: masked
out of the loss and of that finding's AUC); images unknown for every finding are left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

__all__ = ["FOLDS", "build", "build_multilabel", "load"]

# datalist key -> fold name of split.csv (and of predictions.csv's `fold` column)
FOLDS = {"training": "train", "validation": "val", "test": "test"}


def build(index, split, label: str) -> dict:
    """The datalist of ``label`` from the index and split tables (pandas DataFrames, index order)."""
    folds = split["fold"].to_numpy()
    truth = index[label].to_numpy().astype(int)
    image_ids = index["image_id"].astype(str).to_numpy()
    patient_ids = index["patient_id"].astype(str).to_numpy()
    key_of = {fold: key for key, fold in FOLDS.items()}
    out: dict = {"label_name": label, **{key: [] for key in FOLDS}}
    for row, fold in enumerate(folds):
        key = key_of.get(fold)
        if key and truth[row] in (0, 1):  # -1: unknown for this label, left out
            out[key].append(
                {"image": row, "label": [int(truth[row])], "image_id": image_ids[row], "patient_id": patient_ids[row]}
            )
    return out


def build_multilabel(index, split, labels: Sequence[str]) -> dict:
    """The datalist of a multi-label cell of ``labels`` (k-vector labels, -1 unknown) from the index and split."""
    folds = split["fold"].to_numpy()
    truth = index[list(labels)].to_numpy().astype(int)
    truth[(truth != 0) & (truth != 1)] = -1
    image_ids = index["image_id"].astype(str).to_numpy()
    patient_ids = index["patient_id"].astype(str).to_numpy()
    key_of = {fold: key for key, fold in FOLDS.items()}
    out: dict = {"label_names": list(labels), **{key: [] for key in FOLDS}}
    for row, fold in enumerate(folds):
        key = key_of.get(fold)
        if key and (truth[row] >= 0).any():
            out[key].append(
                {"image": row, "label": truth[row].tolist(), "image_id": image_ids[row], "patient_id": patient_ids[row]}
            )
    return out


def load(path: str | os.PathLike, key: str | Sequence[str] = "training") -> list[dict]:
    """The entries of one list of a datalist file, or of several in turn; each gets its ``fold``.

    ``test`` may be absent (a datalist made before test folds): it reads as empty.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"datalist {os.fspath(path)!r} not found; run the bundle from its folder "
            f"or pass --bundle_root <cell folder>"
        )
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out = []
    for name in [key] if isinstance(key, str) else key:
        items = data.get(name, []) if name == "test" else data[name]
        out.extend({**item, "fold": FOLDS.get(name, name)} for item in items)
    return out
