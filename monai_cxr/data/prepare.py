"""``monai-cxr prepare``: a dataset source -> ``index.csv``, ``split.csv`` and the resize cache.

Every source (``data/sources/``) yields the same index table (docs/study-layout.md) and, where
it has one, its official split and its own image source for the cache; nothing here or
downstream knows which source it was.

A failed prepare leaves the study as it was: the source, the split, the labels and the cache
settings are all checked first; the cache is built next (it checks the free space before it
changes anything, a killed build resumes, and a rebuild for changed images is built beside the
old cache and replaces it only when complete); ``index.csv`` and ``split.csv`` are then written
together (both or neither) and ``study.json`` last, with the fingerprint of what was written.
Nothing is ever written inside ``--data-dir``.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import pandas as pd

from monai_cxr.data.cache import build_cache, cache_fingerprint, check_settings, discard_if_stale, fingerprint
from monai_cxr.data.labels import empty_folds, label_columns, require_positives, resolve_label
from monai_cxr.data.sources import get_source
from monai_cxr.data.sources.base import Options, TableOptions
from monai_cxr.data.split import (
    TEST_FRACTION,
    VAL_FRACTION,
    check_fractions,
    patient_split,
)
from monai_cxr.data.views import CHOICES as VIEWS
from monai_cxr.errors import CxrError
from monai_cxr.fileio import atomic_writes
from monai_cxr.studydir import data_fingerprint, finished_on_data, update_study

__all__ = ["TableOptions", "make_split", "prepare"]

log = logging.getLogger(__name__)


def _check_options(source, opts: Options) -> None:
    """Refuse options that do not apply to the source, naming the option and the dataset."""
    if source.needs_data_dir and opts.data_dir is None:
        raise CxrError(f"--dataset {source.name} needs --data-dir")
    if not source.needs_data_dir and opts.data_dir is not None:
        raise CxrError(f"--dataset {source.name} reads --table (paths relative to it), not --data-dir")
    if opts.uncertain is not None and "uncertain" not in source.options:
        raise CxrError(f"--uncertain applies to --dataset chexpert, not {source.name}")
    if opts.table is not None and "table" not in source.options:  # any column option set away from its default
        given = [
            f"--{f.name.replace('_', '-')}"
            for f in fields(TableOptions)
            if getattr(opts.table, f.name) != getattr(TableOptions(), f.name)
        ]
        if given:
            raise CxrError(f"{given[0]} applies to --dataset csv, not {source.name}")


def _check_finished(study_dir: Path, index: pd.DataFrame, folds: pd.DataFrame, square: str, images, cache) -> None:
    """One line if these data would replace the tables or the cache that finished cells were trained on."""
    finished = finished_on_data(study_dir)
    if not finished:
        return
    data_path = study_dir / "data"
    changed = [
        name
        for name, frame in (("index.csv", index), ("split.csv", folds))
        if frame.to_csv(index=False).encode() != (data_path / name).read_bytes()
    ]
    if cache and cache_fingerprint(data_path / "cache") not in (None, fingerprint(index, square, images)):
        changed.append("the resize cache (other images, or changed files)")
    if changed:
        what = changed[0] if len(changed) == 1 else f"{', '.join(changed[:-1])} and {changed[-1]}"
        raise CxrError(
            f"these data would replace {what} of {study_dir}, on which {len(finished)} finished "
            f"cell(s) were trained (e.g. {finished[0]}), so their results would become stale; give another "
            f"--study-dir, or --force to prepare anyway"
        )


def make_split(
    source,
    opts: Options,
    index: pd.DataFrame,
    split: str,
    val_fraction: float,
    seed: int,
    test_fraction: float | None = None,
) -> pd.DataFrame:
    """The folds: patients drawn at random (seeded), or the release's own split."""
    if split == "random":
        if source.default_split == "official" and hasattr(source, "random_split_error"):
            raise CxrError(source.random_split_error())
        return patient_split(
            index, val_fraction, seed, test_fraction=TEST_FRACTION if test_fraction is None else test_fraction
        )
    if split != "official":
        raise CxrError(f"split policy {split!r} is not one of random, official")
    return source.official_split(opts, index, val_fraction, seed)


def _check_outside(study_dir: Path, data_dir: Path | None) -> None:
    """Refuse a study directory inside the user's data folder: no command writes there."""
    if data_dir is None or not data_dir.is_dir():
        return
    study = study_dir.resolve()
    if study == data_dir or data_dir in study.parents:
        raise CxrError(
            f"--study-dir {study} is inside --data-dir {data_dir}; monai-cxr never writes into a "
            f"dataset, so choose a study directory outside it"
        )


def prepare(
    dataset: str,
    data_dir,
    study_dir,
    resolutions,
    split: str | None = None,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    view: str | None = None,
    drop_missing: bool = False,
    cache: bool = True,
    square: str = "pad",
    workers: int = 0,
    progress: bool = True,
    uncertain: str | None = None,
    table: TableOptions | None = None,
    test_fraction: float | None = None,
    labels: list[str] | None = None,
    force: bool = False,
) -> Path:
    """Index a source, split it by patient and build the cache under ``study_dir/data``.

    ``view`` and ``split`` default per source (its ``default_view`` and ``default_split``).
    ``test_fraction`` (default 0.2) applies to ``split="random"``; an official split takes the
    release's own folds. ``labels`` (what the study will train, e.g. from ``study``) are checked
    against the data before the cache is built. Data that would change under finished cells (another
    index, split or cache) are refused unless ``force``: their results would become stale.
    """
    source = get_source(dataset)
    view = view or source.default_view
    if view not in VIEWS:
        raise CxrError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    split = split or source.default_split
    if split == "official" and test_fraction is not None:
        raise CxrError(
            f"--test-fraction applies to --split random; --split official keeps the test images of "
            f"the {dataset} release (if it has any)"
        )
    check_fractions(
        val_fraction, TEST_FRACTION if test_fraction is None and split == "random" else (test_fraction or 0.0)
    )
    if cache:  # before anything is written: a failed prepare leaves the study as it was
        resolutions = check_settings(resolutions, square)
    data_dir = Path(data_dir).resolve() if data_dir is not None else None
    study_dir = Path(study_dir)
    _check_outside(study_dir, data_dir)
    opts = Options(data_dir=data_dir, view=view, drop_missing=drop_missing, uncertain=uncertain, table=table)
    _check_options(source, opts)
    data = source.read(opts)
    index = data.index
    folds = make_split(source, opts, index, split, val_fraction, seed, test_fraction)
    labels_found = label_columns(index)
    for label in labels or []:  # a typo is found now, not after hours of cache
        resolve_label(label, labels_found)
    if table is not None and table.label_cols:  # labels the user named must be usable
        for label in labels_found:
            require_positives(index, folds, label)
    if not force:
        _check_finished(study_dir, index, folds, square, data.images, cache)

    data_path = study_dir / "data"
    settings = {
        "dataset": dataset,
        "data_dir": None if data_dir is None else str(data_dir),
        "view": view,
        "split": split,
        "val_fraction": val_fraction,
        "test_fraction": (TEST_FRACTION if test_fraction is None else test_fraction) if split == "random" else None,
        "seed": seed,
        "square": square,
        "resolutions": list(resolutions) if cache else [],
        "n_images": len(index),
        "n_patients": int(index["patient_id"].nunique()),
        "labels": labels_found,
        **data.settings,
        "notes": data.notes,
    }
    synthetic = data_dir is not None and (data_dir / "PHANTOM.md").is_file()
    counts = folds.groupby("fold")["patient_id"].agg(["size", "nunique"])
    log.info(f"indexed {len(index)} images of {settings['n_patients']} patients")
    log.info(
        "split: "
        + "; ".join(
            f"{f} {int(counts.loc[f, 'size'])} images / {int(counts.loc[f, 'nunique'])} patients"
            for f in ("train", "val", "test")
            if f in counts.index
        )
    )
    for note in data.notes:
        log.info(f"note: {note}")
    unusable = [label for label in labels_found if empty_folds(index, folds, label)]
    if unusable:  # one line: a phantom or a small subset leaves many labels without positives
        log.info(
            f"note: {len(unusable)} label(s) lack positives or negatives in the train or val fold and "
            f"cannot be studied: {', '.join(unusable)}"
        )
    if cache:  # checks the free space first; resumable; the tables below are written only after it
        build_cache(
            index,
            data_path / "cache",
            resolutions,
            square=square,
            workers=workers,
            progress=progress,
            images=data.images,
        )
    atomic_writes(
        {
            data_path / "index.csv": lambda tmp: index.to_csv(tmp, index=False),
            data_path / "split.csv": lambda tmp: folds.to_csv(tmp, index=False),
        }
    )
    if not cache:  # a cache of other images would pair index.csv's rows with the wrong pixels
        discard_if_stale(index, data_path / "cache", square=square, images=data.images)
    settings["fingerprint"] = data_fingerprint(study_dir)
    update_study(study_dir, data=settings, synthetic=synthetic)
    log.info(f"wrote {data_path / 'index.csv'} and {data_path / 'split.csv'}")
    return study_dir
