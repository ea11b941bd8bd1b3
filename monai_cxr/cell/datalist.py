"""A cell's datalist: which cache rows it trains and validates on, with their 0/1 truth.

Entries are ``{"image": row, "label": [y], "image_id": ..., "patient_id": ...}``: ``image`` is
the row of the resize cache (= the row of ``index.csv``), ``label`` a one-channel target. Images whose label is unknown
(-1, e.g. CheXpert's uncertain labels under ``--uncertain ignore``) are left out. The
file is plain JSON read by ``json``, never by the config parser, so labels and ids in it are
inert data.
"""

from __future__ import annotations

import json
import os

__all__ = ["build", "load"]


def build(index, split, label: str) -> dict:
    """The datalist of ``label`` from the index and split tables (pandas DataFrames, index order)."""
    folds = split["fold"].to_numpy()
    truth = index[label].to_numpy().astype(int)
    image_ids = index["image_id"].astype(str).to_numpy()
    patient_ids = index["patient_id"].astype(str).to_numpy()
    out: dict = {"label_name": label, "training": [], "validation": []}
    for row, fold in enumerate(folds):
        key = {"train": "training", "val": "validation"}.get(fold)
        if key and truth[row] in (0, 1):  # -1: unknown for this label, left out
            out[key].append({"image": row, "label": [int(truth[row])],
                             "image_id": image_ids[row], "patient_id": patient_ids[row]})
    return out


def load(path: str | os.PathLike, key: str = "training") -> list[dict]:
    """The ``key`` list of a datalist file (used by the bundle configs)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)[key]
