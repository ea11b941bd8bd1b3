"""Any table of images (``--dataset csv``): one row per image, a path, a patient and 0/1 labels.

    monai-cxr prepare --dataset csv --table labels.csv --path-col file --patient-col subject \\
        --label-cols Effusion,Nodule [--view-col view] [--id-col id]

Paths are relative to the table's folder (or absolute). Images may be PNG, JPEG (8-bit,
16-bit or colour; read with PIL) or NIfTI (``.nii``, ``.nii.gz``; read with nibabel, see
:func:`monai_cxr.data.cache.read_nifti`); the cache normalises them all to 8-bit gray.
Label cells hold 0 or 1, or -1 for "unknown" (left out of that label's study).
The label parsing and the file check here are shared with the CheXpert source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.labels import INDEX_COLUMNS
from monai_cxr.errors import CxrError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")
_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}


def read_csv_table(path: Path, required=()) -> pd.DataFrame:
    """A CSV file as strings (blank cells as ""), with its ``required`` columns checked."""
    if not path.is_file():
        raise CxrError(f"table {str(path)!r} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise CxrError(f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CxrError(f"{path.name} has no column {missing[0]!r} (columns: {', '.join(table.columns)})")
    if table.empty:
        raise CxrError(f"{path.name} has no rows")
    return table


def parse_labels(table: pd.DataFrame, columns, where: str, blank: int | None = None,
                 uncertain: int = -1) -> pd.DataFrame:
    """``columns`` of ``table`` as int8 1/0/-1; -1 cells become ``uncertain``, blanks ``blank``.

    Any other value (or a blank when ``blank`` is None) is a CxrError naming the line,
    the column and the value.
    """
    out = {}
    for column in columns:
        text = table[column].astype(str).str.strip()
        values = text.map(_VALUES)
        if blank is not None:
            values = values.where(text != "", blank)
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            allowed = "1, 0 or -1 (unknown)" + (" or blank" if blank is not None else "")
            raise CxrError(f"{where} line {row + 2}: column {column!r} holds {text.iloc[row]!r}; allowed: {allowed}")
        values = values.astype(np.int8)
        out[column] = values.where(values != -1, uncertain).astype(np.int8).to_numpy()
    return pd.DataFrame(out, index=table.index)


def check_files(index: pd.DataFrame, where, drop_missing: bool = False, echo=print) -> pd.DataFrame:
    """Keep rows whose ``path`` is a file; a missing one fails unless ``drop_missing``.

    Every file-based source ends with this check, so a missing image reads the same for all.
    """
    absent = ~index["path"].map(os.path.isfile).to_numpy(dtype=bool)
    if absent.any():
        n, first = int(absent.sum()), ", ".join(index.loc[absent, "image_id"].iloc[:3])
        if not drop_missing:
            raise CxrError(f"{n} of {len(index)} listed images are missing under {where} "
                           f"(first: {first}); pass --drop-missing to leave them out")
        echo(f"warning: dropping {n} listed images that are missing (first: {first})")
        index = index[~absent]
        if index.empty:
            raise CxrError(f"none of the listed images exist under {where}")
    return index.reset_index(drop=True)


def check_unique(ids: pd.Series, where: str) -> None:
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise CxrError(f"{where}: duplicate image ids ({int(dup.sum())} rows), e.g. {ids[dup].iloc[0]}")


def read_table(table, path_col: str, patient_col: str, label_cols, view_col: str | None = None,
               id_col: str | None = None, drop_missing: bool = False, echo=print) -> pd.DataFrame:
    """Index a table of images: ``image_id, patient_id, view, path`` and the ``label_cols``.

    ``image_id`` is the ``id_col`` value, or the path as the table writes it; ``view`` the
    ``view_col`` value in upper case, or ``UNKNOWN``.
    """
    table_path = Path(table)
    label_cols = list(label_cols or [])
    if not label_cols:
        raise CxrError("--dataset csv needs --label-cols (comma-separated label columns of the table)")
    if len(set(label_cols)) != len(label_cols):
        raise CxrError(f"--label-cols repeats a column: {', '.join(label_cols)}")
    clash = [c for c in label_cols if c in INDEX_COLUMNS]
    if clash:
        raise CxrError(f"label column {clash[0]!r} would clash with index.csv's own {clash[0]!r} column; rename it")
    required = [c for c in (path_col, patient_col, view_col, id_col) if c] + label_cols
    frame = read_csv_table(table_path, required)
    for column in filter(None, (path_col, patient_col, id_col)):
        blank = frame[column].str.strip() == ""
        if blank.any():
            raise CxrError(f"{table_path.name} line {int(np.flatnonzero(blank)[0]) + 2}: "
                           f"column {column!r} is blank")
    written = frame[path_col].str.strip()
    suffix = written.str.lower().map(lambda p: next((s for s in IMAGE_SUFFIXES if p.endswith(s)), ""))
    odd = (suffix == "").to_numpy()
    if odd.any():
        raise CxrError(f"{table_path.name} line {int(np.flatnonzero(odd)[0]) + 2}: {written[odd].iloc[0]!r} "
                       f"is not a supported image ({', '.join(IMAGE_SUFFIXES)})")
    base = table_path.resolve().parent
    index = pd.DataFrame({
        "image_id": frame[id_col].str.strip() if id_col else written,
        "patient_id": frame[patient_col].str.strip(),
        "view": frame[view_col].str.strip().str.upper() if view_col else "UNKNOWN",
        "path": written.map(lambda p: os.path.normpath(os.path.join(base, p))),
    })
    check_unique(index["image_id"], table_path.name)
    index = pd.concat([index, parse_labels(frame, label_cols, table_path.name)], axis=1)
    return check_files(index, table_path.parent, drop_missing, echo)
