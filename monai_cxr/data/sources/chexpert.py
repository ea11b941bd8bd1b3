"""The CheXpert source: ``train.csv`` / ``valid.csv`` of CheXpert-v1.0(-small) -> index table.

Label cells are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned
in the report). Blanks count as negatives, as in the CheXpert paper's training. Uncertain
cells follow one of the paper's policies (``--uncertain``):

- ``ones`` (U-Ones): uncertain is positive;
- ``zeros`` (U-Zeros): uncertain is negative;
- ``ignore`` (U-Ignore): uncertain stays -1 in ``index.csv``, "unknown": that image is left
  out of that label's training and validation (and only of that label's).

``image_id`` is the CSV path without the release folder (``train/patient00001/study1/
view1_frontal.jpg``), ``patient_id`` the ``patientNNNNN`` part of it. ``view`` is ``PA`` or
``AP`` for a frontal image with that projection, ``FRONTAL`` for one without, and for a
lateral the ``AP/PA`` cell (``LL``, ``RL``) or ``LATERAL``. Frontal images only unless
``view`` says otherwise. With ``--split official`` the images of ``valid.csv`` are the val
fold and those of ``train.csv`` the train fold.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.sources.base import (
    Options,
    SourceData,
    check_files,
    check_unique,
    given_split,
    parse_labels,
    read_csv_table,
    require_folder,
)
from monai_cxr.data.views import select_view
from monai_cxr.errors import CxrError

LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
REQUIRED = ("Path", "Frontal/Lateral", "AP/PA", *LABELS)
POLICIES = {"ones": 1, "zeros": 0, "ignore": -1}
_PATIENT = re.compile(r"(?:^|/)(patient\d+)/")


def find_release(data_dir) -> Path:
    """The folder holding ``train.csv``: ``data_dir`` itself or its ``CheXpert-v1.0*/`` folder."""
    data_dir = Path(data_dir)
    require_folder(data_dir)
    if (data_dir / "train.csv").is_file():
        return data_dir
    found = sorted(p for p in data_dir.glob("CheXpert-v1.0*") if (p / "train.csv").is_file())
    if len(found) > 1:
        raise CxrError(f"{str(data_dir)!r} holds {' and '.join(p.name for p in found)}; pass one of them as --data-dir")
    if not found:
        raise CxrError(f"no train.csv in {str(data_dir)!r} or in a CheXpert-v1.0*/ folder inside it")
    return found[0]


def _view(frontal_lateral: pd.Series, ap_pa: pd.Series, where: str) -> pd.Series:
    kind = frontal_lateral.str.strip().str.lower()
    odd = ~kind.isin(("frontal", "lateral"))
    if odd.any():
        raise CxrError(
            f"{where} line {int(np.flatnonzero(odd)[0]) + 2}: Frontal/Lateral is "
            f"{frontal_lateral[odd].iloc[0]!r}; allowed: Frontal or Lateral"
        )
    ap_pa = ap_pa.str.strip().str.upper()
    frontal = ap_pa.where(ap_pa.isin(("AP", "PA")), "FRONTAL")
    lateral = ap_pa.where(ap_pa.isin(("LL", "RL")), "LATERAL")
    return frontal.where(kind == "frontal", lateral)


def read_csv(release: Path, name: str, uncertain: str) -> pd.DataFrame:
    """One release CSV as index rows (all views), labels under the ``uncertain`` policy."""
    table = read_csv_table(release / name, REQUIRED)
    written = table["Path"].str.strip()
    # the first part of a CSV path (CheXpert-v1.0-small/) is the release folder, whatever it is called here
    image_id = written.str.replace(r"^CheXpert[^/]*/", "", regex=True)
    patient = image_id.str.extract(_PATIENT, expand=False)
    if patient.isna().any():
        raise CxrError(
            f"{name} line {int(np.flatnonzero(patient.isna())[0]) + 2}: no patientNNNNN in "
            f"path {written[patient.isna()].iloc[0]!r}"
        )
    index = pd.DataFrame(
        {
            "image_id": image_id,
            "patient_id": patient,
            "view": _view(table["Frontal/Lateral"], table["AP/PA"], name),
            "path": f"{release.resolve()}/" + image_id,
        }
    )
    labels = parse_labels(table, LABELS, name, blank=0, uncertain=POLICIES[uncertain])
    return pd.concat([index, labels], axis=1)


def read_chexpert(data_dir, view: str = "frontal", uncertain: str = "ones", drop_missing: bool = False) -> pd.DataFrame:
    """Index a CheXpert release: ``image_id, patient_id, view, path`` and the 14 label columns.

    Rows of ``train.csv`` then of ``valid.csv`` (when present), filtered to ``view``.
    """
    if uncertain not in POLICIES:
        raise CxrError(f"uncertainty policy {uncertain!r} is not one of {', '.join(POLICIES)}")
    release = find_release(data_dir)
    names = [n for n in ("train.csv", "valid.csv") if (release / n).is_file()]
    index = pd.concat([read_csv(release, n, uncertain) for n in names], ignore_index=True)
    check_unique(index["image_id"], " + ".join(names))
    index = select_view(index, view, str(release))
    return check_files(index, release, drop_missing)


def official_folds(data_dir, index: pd.DataFrame) -> pd.Series:
    """``val`` for the images of ``valid.csv``, ``train`` for the rest (``train.csv``)."""
    release = find_release(data_dir)
    if not (release / "valid.csv").is_file():
        raise CxrError(f"--split official needs valid.csv in {release}")
    valid = read_csv(release, "valid.csv", "ones")["image_id"]
    return pd.Series(np.where(index["image_id"].isin(valid), "val", "train"), index=index.index)


_POLICY_NOTES = {
    "ones": "positive (U-Ones)",
    "zeros": "negative (U-Zeros)",
    "ignore": "-1 in index.csv, left out of that label (U-Ignore)",
}


class CheXpertSource:
    """``--dataset chexpert``: CheXpert's train.csv / valid.csv; official split: valid.csv is val."""

    name = "chexpert"
    default_view = "frontal"
    default_split = "random"
    options = ("drop_missing", "uncertain")
    needs_data_dir = True

    def read(self, opts: Options) -> SourceData:
        uncertain = opts.uncertain or "ones"
        index = read_chexpert(opts.data_dir, view=opts.view, uncertain=uncertain, drop_missing=opts.drop_missing)
        note = (
            "CheXpert: blank label cells (finding not mentioned) are negatives; uncertain (-1) cells: "
            + _POLICY_NOTES[uncertain]
        )
        return SourceData(index, settings={"uncertain": uncertain}, notes=[note])

    def official_split(self, opts: Options, index: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
        return given_split(index, official_folds(opts.data_dir, index))
