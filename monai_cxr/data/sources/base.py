"""What every dataset source is: the protocol ``prepare`` calls, and the helpers sources share.

A source turns a release on disk into the one index table of the study layout
(``image_id, patient_id, view, path`` and one 1/0/-1 column per label), an image source for
the resize cache, and, where the release fixes one, its official split. Nothing downstream
of ``prepare`` knows which source it was.
"""

from __future__ import annotations

import csv
import logging
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError, shown

__all__ = [
    "Options",
    "Source",
    "SourceData",
    "TableOptions",
    "check_files",
    "check_unique",
    "given_split",
    "line_of",
    "parse_labels",
    "read_csv_table",
]

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
        raise CxrError(
            f"{len(straddle)} patient(s) have images in two official folds, e.g. patient {straddle.index[0]}"
        )
    for fold in ("train", "val"):
        if not (folds == fold).any():
            raise CxrError(f"the official split has no {fold} images (after the view filter)")
    return pd.DataFrame(
        {
            "image_id": index["image_id"].to_numpy(),
            "patient_id": index["patient_id"].to_numpy(),
            "fold": folds.to_numpy(),
        }
    )


def _odd_name(name: str) -> bool:
    """Whether a column name has characters a reader cannot see: edge spaces, controls, format marks."""
    return name != name.strip() or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)


class _Lines:
    """Row position -> file line, carried in ``DataFrame.attrs``: pandas copies attrs on every
    operation (and compares them in ``concat``), so this is shared rather than copied."""

    __slots__ = ("lines",)

    def __init__(self, lines):
        self.lines = np.asarray(lines, dtype=np.int64)

    def __deepcopy__(self, memo):
        return self

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, position: int) -> int:
        return int(self.lines[position])


def line_of(table: pd.DataFrame, position: int) -> int:
    """The file line of row ``position`` of a table from :func:`read_csv_table` (header: line 1)."""
    lines = table.attrs.get("lines")
    return int(lines[position]) if lines is not None and position < len(lines) else position + 2


# How exported tables spell a missing value (pandas' NaN, R's NA, Excel's #N/A, SQL's NULL, Python's None)
MISSING_MARKERS = frozenset({"nan", "na", "n/a", "#n/a", "null", "none"})


def read_csv_table(path: Path, required=(), nonblank=()) -> pd.DataFrame:
    """A CSV file as strings (blank cells as ""), read strictly; its ``required`` columns checked.

    pandas quietly shifts a row with one field too many into an index, pads a short (cut)
    row with blanks and renames a repeated column; here each of those, a column name with
    invisible characters (a zero-width space, a trailing blank; a leading UTF-8 BOM of the
    file is allowed), and a blank cell in a ``nonblank`` column is one line naming the file,
    the line and the column (as is one holding a missing-value marker such as ``NaN``). Empty cells beyond
    the header (a trailing comma) are dropped, and
    a header column without a name is kept out if it holds nothing. Line numbers of the rows
    are in ``table.attrs["lines"]`` (:func:`line_of`).
    """
    path = Path(path)
    if not path.is_file():
        raise CxrError(f"table {shown(str(path), 200)} does not exist")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise CxrError(f"cannot parse {path.name}: it is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise CxrError(f"cannot parse {path.name} line {reader.line_num}: {exc}") from None
    if not header:
        raise CxrError(f"{path.name} is empty; it needs a header line")
    width = len(header)
    for column, name in enumerate(header, start=1):
        if _odd_name(name):
            raise CxrError(
                f"{path.name} line 1, column {column}: the name {shown(name)} has invisible characters "
                f"or spaces at its ends; rename it to {shown(name.strip())} without them"
            )
    named = [name for name in header if name]
    repeated = next((name for name in named if named.count(name) > 1), None)
    if repeated is not None:
        at = [str(i) for i, name in enumerate(header, start=1) if name == repeated]
        raise CxrError(
            f"{path.name} line 1: column name {shown(repeated)} appears twice (columns {', '.join(at)}); "
            f"column names must be unique"
        )
    for row, line in zip(rows, lines):
        if len(row) > width and any(cell.strip() for cell in row[width:]):
            raise CxrError(
                f"{path.name} line {line} has {len(row)} fields but the header {width} (an unquoted "
                f"comma in a value?); quote such values"
            )
        if len(row) < width:
            raise CxrError(
                f"{path.name} line {line} has {len(row)} fields but the header {width} (a cut or shifted row)"
            )
    table = pd.DataFrame([row[:width] for row in rows], columns=range(width), dtype=object)
    keep = [i for i, name in enumerate(header) if name or (len(table) and (table[i].str.strip() != "").any())]
    unnamed = [i for i in keep if not header[i]]
    if unnamed:
        position = int(np.flatnonzero(table[unnamed[0]].str.strip() != "")[0])
        raise CxrError(
            f"{path.name} line {lines[position]}: column {unnamed[0] + 1} has no name in the header "
            f"but holds {shown(table.iat[position, unnamed[0]])}"
        )
    table = table[keep]
    table.columns = [header[i] for i in keep]
    table.attrs["lines"] = _Lines(lines)
    missing = [c for c in required if c not in table.columns]
    if missing:
        columns = ", ".join(table.columns)
        raise CxrError(
            f"{path.name} has no column {shown(missing[0])} (columns: "
            f"{columns if len(columns) <= 200 else columns[:200] + '...'})"
        )
    if table.empty:
        raise CxrError(f"{path.name} has no rows")
    for column in nonblank:
        cells = table[column].str.strip()
        blank = (cells == "").to_numpy()
        if blank.any():
            raise CxrError(
                f"{path.name} line {line_of(table, int(np.flatnonzero(blank)[0]))}: "
                f"column {shown(column)} is blank; every row needs one"
            )
        marker = cells.str.lower().isin(MISSING_MARKERS).to_numpy()
        if marker.any():  # pandas, R and Excel write a blank so; as an id it would pool unrelated images
            first = int(np.flatnonzero(marker)[0])
            raise CxrError(
                f"{path.name} line {line_of(table, first)}: column {shown(column)} holds "
                f"{shown(cells.iloc[first])}, a missing-value marker; every row needs a real value"
            )
    return table


def parse_labels(
    table: pd.DataFrame, columns, where: str, blank: int | None = None, uncertain: int = -1
) -> pd.DataFrame:
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
            raise CxrError(
                f"{where} line {line_of(table, row)}: column {shown(column)} holds {shown(text.iloc[row])}; "
                f"allowed: {allowed}"
            )
        values = values.astype(np.int8)
        out[column] = values.where(values != -1, uncertain).astype(np.int8).to_numpy()
    return pd.DataFrame(out, index=table.index)


def require_folder(data_dir: Path) -> None:
    """One line unless ``data_dir`` is a folder: absent, or a file (the release's CSV, say) in its place."""
    if data_dir.is_dir():
        return
    if data_dir.exists():
        raise CxrError(f"data folder {str(data_dir)!r} is a file, not a folder; give the folder that holds the release")
    raise CxrError(f"data folder {str(data_dir)!r} does not exist")


def _file_identity(path: str):
    """``(device, inode)`` of a regular file (through links), None if there is none: one ``stat``."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def check_files(index: pd.DataFrame, where, drop_missing: bool = False) -> pd.DataFrame:
    """Keep rows whose ``path`` is a file; a missing one fails unless ``drop_missing``; two rows of one file fail.

    Every file-based source ends with this check, so a missing image reads the same for all. One file listed
    twice (``a.png`` and ``./a.png``, an absolute path, a symlink or a hard link) would be one image counted as
    two, possibly with other labels and in other folds, so it is refused, naming both.
    """
    identity = index["path"].map(_file_identity)
    absent = identity.isna().to_numpy(dtype=bool)
    if absent.any():
        n, first = int(absent.sum()), ", ".join(index.loc[absent, "image_id"].iloc[:3])
        if not drop_missing:
            raise CxrError(
                f"{n} of {len(index)} listed images are missing under {where} "
                f"(first: {first}); pass --drop-missing to leave them out"
            )
        log.warning(f"dropping {n} listed images that are missing (first: {first})")
        index, identity = index[~absent], identity[~absent]
        if index.empty:
            raise CxrError(f"none of the listed images exist under {where}")
    if identity.duplicated().any():
        first: dict = {}
        for row, key in zip(index.index, identity):
            if key in first:
                a, b = index.at[first[key], "image_id"], index.at[row, "image_id"]
                raise CxrError(
                    f"{where}: images {a!r} and {b!r} are the same file ({index.at[row, 'path']}); list each image once"
                )
            first[key] = row
    return index.reset_index(drop=True)


def check_unique(ids: pd.Series, where: str) -> None:
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise CxrError(f"{where}: duplicate image ids ({int(dup.sum())} rows), e.g. {ids[dup].iloc[0]}")
