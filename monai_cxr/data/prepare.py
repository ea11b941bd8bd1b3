"""``monai-cxr prepare``: a dataset source -> ``index.csv``, ``split.csv`` and the resize cache.

Every source yields the same index table (docs/study-layout.md); what differs is how it is
read, what its official split is and where the cache takes its pixels from. Those three
are settled here, so nothing downstream knows which source it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from monai_cxr.data.labels import empty_folds, label_columns, require_positives
from monai_cxr.data.views import CHOICES as VIEWS, select_view
from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv
from monai_cxr.studyfile import update_study

SOURCES = ("nih", "chexpert", "chestmnist", "csv")
DEFAULT_VIEW = {"nih": "all", "chexpert": "frontal", "chestmnist": "all", "csv": "all"}
DEFAULT_SPLIT = {"nih": "random", "chexpert": "random", "chestmnist": "official", "csv": "random"}


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
class Source:
    """What a dataset source gives ``prepare``: its index and, where it has them, more."""

    index: pd.DataFrame
    images: object = None            # the cache's image source; None: the index's image files
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_source(dataset: str, data_dir, view: str, drop_missing: bool, echo, uncertain: str | None = None,
                table: TableOptions | None = None) -> Source:
    """The index table of a source (and its image source, settings and notes)."""
    if dataset in ("nih", "chexpert", "chestmnist") and data_dir is None:
        raise CxrError(f"--dataset {dataset} needs --data-dir")
    if uncertain is not None and dataset != "chexpert":
        raise CxrError(f"--uncertain applies to --dataset chexpert, not {dataset}")
    if table is not None and dataset != "csv":
        given = [f"--{k.replace('_', '-')}" for k in ("table", "label_cols", "view_col", "id_col")
                 if getattr(table, k)]
        if given:
            raise CxrError(f"{given[0]} applies to --dataset csv, not {dataset}")
    if dataset == "nih":
        from monai_cxr.data.nih import read_nih
        return Source(read_nih(data_dir, view=view, drop_missing=drop_missing, echo=echo))
    if dataset == "chexpert":
        from monai_cxr.data.chexpert import read_chexpert
        uncertain = uncertain or "ones"
        index = read_chexpert(data_dir, view=view, uncertain=uncertain, drop_missing=drop_missing, echo=echo)
        return Source(index, settings={"uncertain": uncertain}, notes=[
            "CheXpert: blank label cells (finding not mentioned) are negatives; uncertain (-1) cells: "
            + {"ones": "positive (U-Ones)", "zeros": "negative (U-Zeros)",
               "ignore": "-1 in index.csv, left out of that label (U-Ignore)"}[uncertain]])
    if dataset == "chestmnist":
        from monai_cxr.data.chestmnist import NOTE, NpzImages, read_chestmnist
        if view not in ("all", "frontal"):
            raise CxrError(f"ChestMNIST has no view information; --view {view} cannot be applied (use all)")
        index, files = read_chestmnist(data_dir)
        return Source(index, images=NpzImages.from_references(index["path"], files),
                      settings={"files": {str(side): str(path) for side, path in files.items()}},
                      notes=[NOTE])
    if dataset == "csv":
        from monai_cxr.data.table import read_table
        if data_dir is not None:
            raise CxrError("--dataset csv reads --table (paths relative to it), not --data-dir")
        if table is None or table.table is None:
            raise CxrError("--dataset csv needs --table FILE.csv")
        if view != "all" and not table.view_col:
            raise CxrError(f"--view {view} needs --view-col for --dataset csv")
        index = read_table(table.table, table.path_col, table.patient_col, table.label_cols,
                           view_col=table.view_col, id_col=table.id_col, drop_missing=drop_missing, echo=echo)
        settings = {k: v for k, v in vars(table).items() if v}
        settings["table"] = str(Path(table.table).resolve())
        return Source(select_view(index, view, table.table), settings=settings)
    raise CxrError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")


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


def make_split(dataset: str, data_dir, index: pd.DataFrame, split: str, val_fraction: float,
               seed: int) -> pd.DataFrame:
    from monai_cxr.data.split import patient_split

    if split == "random":
        if dataset == "chestmnist":
            raise CxrError("ChestMNIST files hold no patient ids, so only --split official keeps a "
                           "patient's images in one fold; use --split official")
        return patient_split(index, val_fraction, seed)
    if split != "official":
        raise CxrError(f"split policy {split!r} is not one of random, official")
    if dataset == "nih":
        from monai_cxr.data.nih import official_lists
        train_val, test = official_lists(data_dir)
        return patient_split(index, val_fraction, seed, test_ids=test, train_val_ids=train_val)
    if dataset == "chexpert":
        from monai_cxr.data.chexpert import official_folds
        return given_split(index, official_folds(data_dir, index))
    if dataset == "chestmnist":
        from monai_cxr.data.chestmnist import official_folds
        return given_split(index, official_folds(index))
    raise CxrError(f"--split official is not defined for dataset {dataset!r}; use --split random")


def prepare(dataset: str, data_dir, study_dir, resolutions, split: str | None = None,
            val_fraction: float = 0.2, seed: int = 0, view: str | None = None, drop_missing: bool = False,
            cache: bool = True, square: str = "pad", workers: int = 0, echo=print,
            progress: bool = True, uncertain: str | None = None, table: TableOptions | None = None) -> Path:
    """Index a source, split it by patient and build the cache under ``study_dir/data``.

    ``view`` and ``split`` default per source (:data:`DEFAULT_VIEW`, :data:`DEFAULT_SPLIT`).
    """
    if dataset not in SOURCES:
        raise CxrError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    view = view or DEFAULT_VIEW[dataset]
    if view not in VIEWS:
        raise CxrError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    split = split or DEFAULT_SPLIT[dataset]
    if cache:  # before anything is written: a failed prepare leaves the study as it was
        from monai_cxr.data.cache import check_settings
        resolutions = check_settings(resolutions, square)
    data_dir = Path(data_dir).resolve() if data_dir is not None else None
    study_dir = Path(study_dir)
    source = read_source(dataset, data_dir, view, drop_missing, echo, uncertain=uncertain, table=table)
    index = source.index
    folds = make_split(dataset, data_dir, index, split, val_fraction, seed)
    labels = label_columns(index)
    if dataset == "csv":  # labels the user named must be usable
        for label in labels:
            require_positives(index, folds, label)

    data = study_dir / "data"
    write_csv(data / "index.csv", index)
    write_csv(data / "split.csv", folds)
    settings = {"dataset": dataset, "data_dir": None if data_dir is None else str(data_dir), "view": view,
                "split": split, "val_fraction": val_fraction, "seed": seed, "square": square,
                "resolutions": list(resolutions) if cache else [], "n_images": len(index),
                "n_patients": int(index["patient_id"].nunique()), "labels": labels,
                **source.settings, "notes": source.notes}
    synthetic = data_dir is not None and (data_dir / "PHANTOM.md").is_file()
    update_study(study_dir, data=settings, synthetic=synthetic)
    counts = folds.groupby("fold")["patient_id"].agg(["size", "nunique"])
    echo(f"indexed {len(index)} images of {settings['n_patients']} patients -> {data / 'index.csv'}")
    echo("split: " + "; ".join(f"{f} {int(counts.loc[f, 'size'])} images / "
                               f"{int(counts.loc[f, 'nunique'])} patients"
                               for f in ("train", "val", "test") if f in counts.index))
    for note in source.notes:
        echo(f"note: {note}")
    unusable = [label for label in labels if empty_folds(index, folds, label)]
    if unusable:  # one line: a phantom or a small subset leaves many labels without positives
        echo(f"note: {len(unusable)} label(s) lack positives or negatives in the train or val fold and "
             f"cannot be studied: {', '.join(unusable)}")
    if cache:
        from monai_cxr.data.cache import build_cache
        build_cache(index, data / "cache", resolutions, square=square, workers=workers, echo=echo,
                    progress=progress, images=source.images)
    return study_dir
