"""The NIH ChestX-ray14 source: ``Data_Entry_2017*.csv`` plus its PNG folders -> index table.

Reads the release as NIH ships it (and as ``monai-cxr synth`` writes the phantom): either
CSV variant, either name of the sex column, a possible trailing empty column, and images
flat, under ``images/`` or under ``images_001/images/`` ... ``images_012/images/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.images import IMAGE_SUFFIXES
from monai_cxr.data.sources.base import (
    Options,
    SourceData,
    check_files,
    check_unique,
    line_of,
    read_csv_table,
    require_folder,
)
from monai_cxr.data.split import patient_split
from monai_cxr.data.views import select_view
from monai_cxr.errors import CxrError, shown

LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")


def find_entry_csv(data_dir: Path) -> Path:
    """The release's data-entry CSV (the v2020 file when both are present)."""
    require_folder(data_dir)
    for name in CSV_NAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise CxrError(f"no {' or '.join(CSV_NAMES)} in {str(data_dir)!r}")


def read_entries(csv_path: Path) -> pd.DataFrame:
    """The data-entry table with its required columns checked (and a trailing empty column dropped)."""
    # a blank Finding Labels is malformed, not negative: NIH writes "No Finding" for those
    table = read_csv_table(csv_path, REQUIRED, nonblank=("Image Index", "Patient ID", "Finding Labels"))
    table = table.loc[:, [c for c in table.columns if not c.startswith("Unnamed:")]]
    table["Image Index"] = table["Image Index"].str.strip()
    check_unique(table["Image Index"], csv_path.name)
    return table


def label_matrix(findings: pd.Series, where: str = "Data_Entry_2017.csv", table: pd.DataFrame | None = None):
    """One 0/1 column per NIH label from the ``|``-separated ``Finding Labels`` strings.

    Spaces around a name are dropped before the names become columns (``Atelectasis |Mass``
    is ``Atelectasis`` and ``Mass``), so one label is one column however it was spaced. A cell
    that names nothing (``|``) is an error naming ``where`` and the line (of ``table``, the
    :func:`read_entries` table the findings are from): NIH writes ``No Finding`` for none.
    """
    names = findings.str.replace(r"\s*\|\s*", "|", regex=True).str.strip()
    dummies = names.str.get_dummies(sep="|")

    def at(rows) -> str:  # "FILE line N" of the first row in the boolean mask ``rows``
        row = int(np.flatnonzero(np.asarray(rows))[0])
        return f"{where} line {line_of(table, row) if table is not None else row + 2}"

    gap = names.str.startswith("|") | names.str.endswith("|") | names.str.contains("||", regex=False)
    gap = (gap & (dummies.sum(axis=1) > 0)).to_numpy()  # a cell naming nothing at all is told below
    if gap.any():  # Mass| or Mass||Edema: a name lost (cut, or a stray separator); say so rather than guess
        raise CxrError(
            f"{at(gap)}: column 'Finding Labels' holds {shown(findings[gap].iloc[0])}, with an empty name "
            f"between '|' separators"
        )

    nameless = (dummies.sum(axis=1) == 0).to_numpy()
    if nameless.any():
        raise CxrError(
            f"{at(nameless)}: column 'Finding Labels' holds {shown(findings[nameless].iloc[0])}, which names no "
            f"finding; NIH writes {NO_FINDING!r} for none"
        )
    unknown = sorted(set(dummies.columns) - set(LABELS) - {NO_FINDING, ""})
    if unknown:
        raise CxrError(
            f"{at(dummies[unknown[0]] == 1)}: unknown finding label(s) {', '.join(map(repr, unknown))}; "
            f"NIH labels are {', '.join(LABELS)} or {NO_FINDING!r}"
        )
    out = pd.DataFrame(0, index=findings.index, columns=list(LABELS), dtype=np.int8)
    for label in LABELS:
        if label in dummies.columns:
            out[label] = dummies[label].to_numpy(dtype=np.int8)
    if NO_FINDING in dummies.columns:
        clash = (dummies[NO_FINDING] == 1) & (out.sum(axis=1) > 0)
        if clash.any():
            raise CxrError(
                f"{at(clash)}: {NO_FINDING!r} combined with a finding in {int(clash.sum())} row(s), "
                f"e.g. {shown(findings[clash].iloc[0])}"
            )
    return out


def image_folders(data_dir: Path) -> list[Path]:
    """Where NIH images may live: images_*/images/, images_*/, images/, the folder itself."""
    nested = sorted(p for p in data_dir.glob("images_*") if p.is_dir())
    folders = [p / "images" if (p / "images").is_dir() else p for p in nested]
    if (data_dir / "images").is_dir():
        folders.append(data_dir / "images")
    folders.append(data_dir)
    return folders


def locate_images(data_dir: Path, names: pd.Series) -> pd.Series:
    """Absolute path of each named image, or "" where it is in none of the folders."""
    found: dict[str, str] = {}
    for folder in image_folders(data_dir):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.name not in found:
                    found[entry.name] = os.path.abspath(entry.path)
    return names.map(found).fillna("")


def read_nih(data_dir: str | os.PathLike, view: str = "all", drop_missing: bool = False) -> pd.DataFrame:
    """Index an NIH-layout folder: ``image_id, patient_id, view, path`` and the 14 label columns.

    Parameters
    ----------
    data_dir : folder holding ``Data_Entry_2017*.csv`` and the image folders.
    view : a ``--view`` choice (``"all"``, ``"frontal"``, ``"PA"``, ``"AP"``; see views.py).
    drop_missing : drop rows whose image file is absent instead of failing.
    """
    data_dir = Path(data_dir)
    csv_path = find_entry_csv(data_dir)
    table = read_entries(csv_path)
    index = pd.DataFrame(
        {
            "image_id": table["Image Index"],
            "patient_id": table["Patient ID"].str.strip(),
            "view": table["View Position"].str.strip().str.upper(),
        }
    )
    index = pd.concat([index, label_matrix(table["Finding Labels"], csv_path.name, table)], axis=1)
    index = select_view(index, view, str(data_dir))  # before the file lookups: fewer to check
    index.insert(3, "path", locate_images(data_dir, index["image_id"]))
    return check_files(index, data_dir, drop_missing)


def read_list(path: Path) -> set[str]:
    """Image ids listed one per line (``train_val_list.txt``, ``test_list.txt``)."""
    if not path.is_file():
        raise CxrError(f"--split official needs {path.name} in {path.parent}")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def official_lists(data_dir: str | os.PathLike) -> tuple[set[str], set[str]]:
    """NIH's official ``(train_val, test)`` image ids, checked to be disjoint."""
    data_dir = Path(data_dir)
    train_val, test = read_list(data_dir / "train_val_list.txt"), read_list(data_dir / "test_list.txt")
    both = test & train_val
    if both:
        raise CxrError(f"{len(both)} image(s) are in both test_list.txt and train_val_list.txt, e.g. {sorted(both)[0]}")
    return train_val, test


class NihSource:
    """``--dataset nih``: NIH ChestX-ray14 (and ``monai-cxr synth``'s phantom); official split: its two lists."""

    name = "nih"
    default_view = "all"
    default_split = "random"
    options = ("drop_missing",)
    needs_data_dir = True

    def read(self, opts: Options) -> SourceData:
        return SourceData(read_nih(opts.data_dir, view=opts.view, drop_missing=opts.drop_missing))

    def official_split(self, opts: Options, index: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
        train_val, test = official_lists(opts.data_dir)
        return patient_split(index, val_fraction, seed, test_ids=test, train_val_ids=train_val)
