"""Read a study directory as the report needs it: settings, finished cells, missing cells.

Only the files of the contract in ``docs/study-layout.md`` are read: ``study.json``,
``bundles/<cell>/cell.json``, ``predictions.csv`` and ``run.json``. A cell is finished
exactly when its ``run.json`` exists; generated cells without one are listed as missing,
so a partial study is reported for what has finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError
from monai_cxr.studydir import stale_reason

PREDICTION_COLUMNS = ("image_id", "patient_id", "label", "score")
CELL_KEYS = ("label", "arch", "resolution", "seed")


@dataclass
class Cell:
    """One grid cell: its identity, and for a finished cell its run record and predictions."""

    name: str
    label: str
    arch: str
    resolution: int
    seed: int
    run: dict | None = None
    predictions: object = None  # pandas.DataFrame for a finished cell, in image_id order
    reason: str = ""  # why a cell is missing

    @cached_property
    def arrays(self):
        """(image_id, label, score) NumPy arrays of the predictions, computed once."""
        p = self.predictions
        return p["image_id"].to_numpy(dtype=object), p["label"].to_numpy(), p["score"].to_numpy()

    @property
    def key(self) -> tuple:
        return (self.label, self.arch, self.resolution, self.seed)


@dataclass
class Study:
    path: Path
    settings: dict
    finished: list[Cell] = field(default_factory=list)
    missing: list[Cell] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return bool(self.settings.get("synthetic", False))


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CxrError(f"cannot read {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise CxrError(f"{path} must hold a JSON object, not {type(obj).__name__}")
    return obj


def read_predictions(path: Path):
    """Read a cell's ``predictions.csv``, checking the contract's columns and 0/1 labels."""
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise CxrError(f"cannot read {path}: {exc}") from None
    absent = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if absent:
        raise CxrError(f"{path} lacks column(s) {', '.join(absent)}; "
                       f"expected {', '.join(PREDICTION_COLUMNS)}")
    if not frame["label"].isin([0, 1]).all():
        raise CxrError(f"{path}: column label must hold 0 or 1 only")
    score = pd.to_numeric(frame["score"], errors="coerce")
    if not np.isfinite(score.to_numpy(dtype=float)).all():
        raise CxrError(f"{path}: column score must hold finite numbers (found empty, text or inf)")
    if frame["image_id"].duplicated().any():
        dup = frame.loc[frame["image_id"].duplicated(), "image_id"].iloc[0]
        raise CxrError(f"{path}: image_id {dup!r} appears more than once")
    frame["label"] = frame["label"].astype(int)
    frame["score"] = score.astype(float)
    # in image_id order, so two cells on the same images pair up row by row
    return frame.sort_values("image_id", ignore_index=True, kind="stable")


def _read_cell(folder: Path) -> Cell:
    info = _read_json(folder / "cell.json")
    absent = [k for k in CELL_KEYS if k not in info]
    if absent:
        raise CxrError(f"{folder / 'cell.json'} lacks {', '.join(absent)}")
    try:
        resolution, seed = int(info["resolution"]), int(info["seed"])
    except (TypeError, ValueError):
        raise CxrError(f"{folder / 'cell.json'}: resolution and seed must be integers, got "
                       f"{info['resolution']!r} and {info['seed']!r}") from None
    cell = Cell(name=folder.name, label=str(info["label"]), arch=str(info["arch"]),
                resolution=resolution, seed=seed)
    run_path = folder / "run.json"
    if not run_path.exists():
        cell.reason = "not run yet (no run.json)"
        return cell
    pred_path = folder / "predictions.csv"
    if not pred_path.exists():
        cell.reason = "run.json without predictions.csv"
        return cell
    cell.run = _read_json(run_path)
    cell.predictions = read_predictions(pred_path)
    return cell


def load_study(study_dir) -> Study:
    """Read ``study.json`` and every ``bundles/<cell>/``; fail if no cell has finished."""
    path = Path(study_dir)
    if not path.is_dir():
        raise CxrError(f"study directory {str(path)!r} does not exist")
    settings = _read_json(path / "study.json") if (path / "study.json").exists() else {}
    study = Study(path=path, settings=settings)
    bundles = path / "bundles"
    folders = sorted(p for p in bundles.iterdir() if (p / "cell.json").exists()) \
        if bundles.is_dir() else []
    for folder in folders:
        cell = _read_cell(folder)
        reason = stale_reason(path, folder) if cell.run is not None else None
        if reason:  # results of other data or configs are never reported as current
            cell.run, cell.predictions, cell.reason = None, None, f"stale: {reason}"
        (study.finished if cell.run is not None else study.missing).append(cell)
    if not study.finished:
        raise CxrError(f"no finished cell in {bundles} ({len(folders)} generated, none has "
                       f"run.json); run `monai-cxr run --study-dir {path}` first")
    keys = [c.key for c in study.finished]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise CxrError(f"two finished cells share label, arch, resolution, seed {dup}")
    return study
