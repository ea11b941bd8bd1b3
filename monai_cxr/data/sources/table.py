"""Any table of images (``--dataset csv``): one row per image, a path, a patient and 0/1 labels.

    monai-cxr prepare --dataset csv --table labels.csv --path-col file --patient-col subject \\
        --label-cols Effusion,Nodule [--view-col view] [--id-col id]

Paths are relative to the table's folder (or absolute). Images may be PNG, JPEG (8-bit,
16-bit or colour; read with PIL) or NIfTI (``.nii``, ``.nii.gz``; read with nibabel, see
:func:`monai_cxr.data.cache.read_nifti`); the cache normalises them all to 8-bit gray.
Label cells hold 0 or 1, or -1 for "unknown" (left out of that label's study).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.images import IMAGE_SUFFIXES
from monai_cxr.data.labels import INDEX_COLUMNS
from monai_cxr.data.sources.base import (
    Options,
    SourceData,
    check_files,
    check_unique,
    line_of,
    parse_labels,
    read_csv_table,
)
from monai_cxr.data.views import select_view
from monai_cxr.errors import CxrError


def read_table(
    table,
    path_col: str,
    patient_col: str,
    label_cols,
    view_col: str | None = None,
    id_col: str | None = None,
    drop_missing: bool = False,
) -> pd.DataFrame:
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
    frame = read_csv_table(table_path, required, nonblank=[c for c in (path_col, patient_col, id_col) if c])
    written = frame[path_col].str.strip()
    suffix = written.str.lower().map(lambda p: next((s for s in IMAGE_SUFFIXES if p.endswith(s)), ""))
    odd = (suffix == "").to_numpy()
    if odd.any():
        raise CxrError(
            f"{table_path.name} line {line_of(frame, int(np.flatnonzero(odd)[0]))}: {written[odd].iloc[0]!r} "
            f"is not a supported image ({', '.join(IMAGE_SUFFIXES)})"
        )
    base = table_path.resolve().parent
    index = pd.DataFrame(
        {
            "image_id": frame[id_col].str.strip() if id_col else written,
            "patient_id": frame[patient_col].str.strip(),
            "view": frame[view_col].str.strip().str.upper() if view_col else "UNKNOWN",
            "path": written.map(lambda p: os.path.normpath(os.path.join(base, p))),
        }
    )
    check_unique(index["image_id"], table_path.name)
    index = pd.concat([index, parse_labels(frame, label_cols, table_path.name)], axis=1)
    return check_files(index, table_path.parent, drop_missing)


class TableSource:
    """``--dataset csv``: any table of image paths, patients and 0/1 labels; no official split."""

    name = "csv"
    default_view = "all"
    default_split = "random"
    options = ("drop_missing", "table")
    needs_data_dir = False

    def read(self, opts: Options) -> SourceData:
        table = opts.table
        if table is None or table.table is None:
            raise CxrError("--dataset csv needs --table FILE.csv")
        if opts.view != "all" and not table.view_col:
            raise CxrError(f"--view {opts.view} needs --view-col for --dataset csv")
        index = read_table(
            table.table,
            table.path_col,
            table.patient_col,
            table.label_cols,
            view_col=table.view_col,
            id_col=table.id_col,
            drop_missing=opts.drop_missing,
        )
        settings = {k: v for k, v in vars(table).items() if v}
        settings["table"] = str(Path(table.table).resolve())
        return SourceData(select_view(index, opts.view, table.table), settings=settings)

    def official_split(self, opts: Options, index: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
        raise CxrError("--split official is not defined for --dataset csv; use --split random")
