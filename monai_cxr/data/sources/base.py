"""What every dataset source is: the protocol ``prepare`` calls, and the helpers sources share.

A source turns a release on disk into the one index table of the study layout
(``image_id, patient_id, view, path`` and one 1/0/-1 column per label), an image source for
the resize cache, and, where the release fixes one, its official split. Nothing downstream
of ``prepare`` knows which source it was.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError

__all__ = ["Options", "Source", "SourceData", "TableOptions", "check_files", "check_unique", "given_split",
           "parse_labels", "read_csv_table"]

log = logging.getLogger(__name__)
_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}


@dataclass
class TableOptions:
    """The columns of a ``--dataset csv`` table."""

    table: str | None = None
    path_col: str = "path"
    patient_col: str = "patient_id"
    label_cols: list[str] = field(default_factory=list)
    view_col: str | None = None
    id_col: str | None = None


@dataclass
class Options:
    """What the user said about the source (``prepare``'s source options)."""

    data_dir: Path | None = None
    view: str = "all"
    drop_missing: bool = False
    uncertain: str | None = None
    table: TableOptions | None = None


@dataclass
class SourceData:
    """What a source gives ``prepare``: its index and, where it has them, more."""

    index: pd.DataFrame
    images: object = None  # the cache's image source; None: the index's image files
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Source(Protocol):
    """One dataset layout. Implement it in ``data/sources/NAME.py`` and list it in :data:`SOURCES`.

    Attributes:
        name: the ``--dataset`` value.
        default_view, default_split: ``--view`` and ``--split`` when not given.
        options: the ``Options`` fields besides ``data_dir`` and ``view`` that apply to it.
        needs_data_dir: whether ``--data-dir`` is required (False: it must not be given).
    """

    name: ClassVar[str]
    default_view: ClassVar[str]
    default_split: ClassVar[str]
    options: ClassVar[tuple[str, ...]]
    needs_data_dir: ClassVar[bool]

    def read(self, opts: Options) -> SourceData: ...

    def official_split(self, opts: Options, index: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
        """The release's own folds (``image_id, patient_id, fold``), or a CxrError if it has none."""
        ...


def given_split(index: pd.DataFrame, folds) -> pd.DataFrame:
    """A split whose folds a release fixes; checked to keep every patient in one fold."""
    folds = pd.Series(list(folds), index=index.index)
    per_patient = folds.groupby(index["patient_id"].astype(str)).nunique()
    straddle = per_patient[per_patient > 1]
    if len(straddle):
        raise CxrError(f"{len(straddle)} patient(s) have images in two official folds, "
                       f"e.g. patient {straddle.index[0]}")
    for fold in ("train", "val"):
        if not (folds == fold).any():
            raise CxrError(f"the official split has no {fold} images (after the view filter)")
    return pd.DataFrame({"image_id": index["image_id"].to_numpy(),
                         "patient_id": index["patient_id"].to_numpy(), "fold": folds.to_numpy()})


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


def check_files(index: pd.DataFrame, where, drop_missing: bool = False) -> pd.DataFrame:
    """Keep rows whose ``path`` is a file; a missing one fails unless ``drop_missing``.

    Every file-based source ends with this check, so a missing image reads the same for all.
    """
    absent = ~index["path"].map(os.path.isfile).to_numpy(dtype=bool)
    if absent.any():
        n, first = int(absent.sum()), ", ".join(index.loc[absent, "image_id"].iloc[:3])
        if not drop_missing:
            raise CxrError(f"{n} of {len(index)} listed images are missing under {where} "
                           f"(first: {first}); pass --drop-missing to leave them out")
        log.warning(f"dropping {n} listed images that are missing (first: {first})")
        index = index[~absent]
        if index.empty:
            raise CxrError(f"none of the listed images exist under {where}")
    return index.reset_index(drop=True)


def check_unique(ids: pd.Series, where: str) -> None:
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise CxrError(f"{where}: duplicate image ids ({int(dup.sum())} rows), e.g. {ids[dup].iloc[0]}")
