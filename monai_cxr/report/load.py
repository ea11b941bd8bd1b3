"""Read a study as the report needs it: its grid, the finished cells, the missing ones.

The report covers exactly the cells of ``study.json["grid"]["cells"]`` (the grid that
``generate`` last wrote); folders in ``bundles/`` from an earlier grid are counted and
ignored. A grid cell is finished exactly when its ``run.json`` exists; the others are
missing, each with a ``reason``, so a partial study is reported for what has finished.

Every finished cell's ``predictions.csv`` is checked against ``data/split.csv`` and
``data/index.csv``: per fold it scored, it must hold exactly the fold's images of its label
that are not unknown (-1), with the index's truth. A truncated or stale file is a one-line
error naming the file and the first mismatch, never a quietly smaller AUC.

A multi-label cell (``cell.json`` has ``task: multilabel`` and ``labels``; its ``predictions.csv`` has a
``finding`` column, one row per image and finding) is read as one *virtual cell* per finding with
``task="multilabel"``, named ``<folder>/<label-slug>``: each is checked and reported exactly as a binary
cell of that finding would be, so binary and multi-label results stand side by side (``task`` tells them
apart in every table).

Each label is scored on one fold, so that all its cells are compared on the same images:
``test`` when every finished cell of the label has test predictions, else ``val`` (then
checkpoint selection and scoring used the same images and the AUCs are optimistic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError
from monai_cxr.grid.cells import label_slug, read_cell
from monai_cxr.studydir import stale_reason

PREDICTION_COLUMNS = ("image_id", "patient_id", "label", "score")
SCORED_FOLDS = ("val", "test")
TASKS = ("binary", "multilabel")
UNKNOWN = -1


@dataclass
class FindingResult:
    """What the report reads of one finding of a bundle: a binary cell, or one finding of a multi-label cell.

    The bundle's identity is :class:`monai_cxr.grid.cells.Cell` (read by :func:`~monai_cxr.grid.cells.read_cell`);
    this is its result for one finding, as the tables use it: run record, predictions, why it is missing.
    """

    name: str
    label: str
    arch: str
    resolution: int
    seed: int
    path: Path | None = None
    run: dict | None = None
    # pandas.DataFrame for a finished cell: image_id, patient_id, fold, label, score, sorted by fold, image_id
    predictions: object = None
    reason: str = ""  # why a grid cell is not reported (missing, or stale)
    task: str = "binary"  # "multilabel": one finding of a network trained for several
    _arrays: dict = field(default_factory=dict, repr=False)

    def arrays(self, fold: str):
        """(image_id, label, score) NumPy arrays of one fold, in image_id order, computed once."""
        if fold not in self._arrays:
            p = self.predictions[self.predictions["fold"] == fold]
            self._arrays[fold] = (p["image_id"].to_numpy(dtype=object), p["label"].to_numpy(), p["score"].to_numpy())
        return self._arrays[fold]

    @property
    def folds(self) -> set:
        return set(self.predictions["fold"]) if self.predictions is not None else set()

    @property
    def key(self) -> tuple:
        return (self.label, self.task, self.arch, self.resolution, self.seed)


@dataclass
class Study:
    path: Path
    settings: dict
    finished: list[FindingResult] = field(default_factory=list)
    missing: list[FindingResult] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # bundles/ folders not in the grid
    folds: dict = field(default_factory=dict)  # label -> the fold its AUCs are computed on

    @property
    def synthetic(self) -> bool:
        return bool(self.settings.get("synthetic", False))

    @property
    def optimistic(self) -> list[str]:
        """Labels scored on val: the images that also selected the checkpoint."""
        return sorted(label for label, fold in self.folds.items() if fold == "val")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CxrError(f"cannot read {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise CxrError(f"{path} must hold a JSON object, not {type(obj).__name__}")
    return obj


def _read_table(path: Path):
    # ids are text as written: an image or patient called "NA" must not become NaN
    try:
        return pd.read_csv(path, dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise CxrError(f"cannot read {path}: {exc}") from None


def read_predictions(path: Path):
    """Read a cell's ``predictions.csv``, checking the contract's columns, 0/1 labels and folds.

    A file without ``fold`` (written before test folds existed) holds val predictions;
    ``frame.attrs["has_fold"]`` says which kind it was. A multi-label cell's file also has ``finding``;
    an image may then appear once per finding.
    """
    frame = _read_table(path)
    absent = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if absent:
        raise CxrError(f"{path} lacks column(s) {', '.join(absent)}; expected {', '.join(PREDICTION_COLUMNS)}, fold")
    has_fold = "fold" in frame.columns
    if not has_fold:
        frame["fold"] = "val"
    frame["fold"] = frame["fold"].astype(str)
    bad = frame.loc[~frame["fold"].isin(SCORED_FOLDS), "fold"]
    if len(bad):
        raise CxrError(f"{path}: fold must be val or test, got {bad.iloc[0]!r}")
    if not frame["label"].isin([0, 1]).all():
        raise CxrError(f"{path}: column label must hold 0 or 1 only")
    score = pd.to_numeric(frame["score"], errors="coerce")
    if not np.isfinite(score.to_numpy(dtype=float)).all():
        raise CxrError(f"{path}: column score must hold finite numbers (found empty, text or inf)")
    keys = ["finding", "image_id"] if "finding" in frame.columns else ["image_id"]
    if frame.duplicated(keys).any():
        dup = frame.loc[frame.duplicated(keys), "image_id"].iloc[0]
        once = " for one finding" if len(keys) > 1 else ""
        raise CxrError(f"{path}: image_id {dup!r} appears more than once{once}")
    frame["label"] = frame["label"].astype(int)
    frame["score"] = score.astype(float)
    # in image_id order within a fold, so cells on the same images pair up row by row
    frame = frame.sort_values(["fold", "image_id"], ignore_index=True, kind="stable")
    frame.attrs["has_fold"] = has_fold
    return frame


class Truth:
    """What each label's val and test images are, from ``data/split.csv`` and ``data/index.csv``."""

    def __init__(self, study_dir: Path):
        data = study_dir / "data"
        for path in (data / "index.csv", data / "split.csv"):
            if not path.is_file():
                raise CxrError(f"{path} not found; the report checks every cell's predictions against it")
        self.index, split = _read_table(data / "index.csv"), _read_table(data / "split.csv")
        for path, frame, cols in (
            (data / "index.csv", self.index, ("image_id",)),
            (data / "split.csv", split, ("image_id", "fold")),
        ):
            absent = [c for c in cols if c not in frame.columns]
            if absent:
                raise CxrError(f"{path} lacks column {absent[0]}")
        folds = dict(zip(split["image_id"], split["fold"].astype(str)))
        self.fold = self.index["image_id"].map(folds)
        self._cache: dict = {}

    def expected(self, label: str, where: Path) -> dict:
        """``{fold: Series image_id -> 0/1}`` of a label's val and test images that are not unknown."""
        if label not in self._cache:
            if label not in self.index.columns:
                raise CxrError(f"{where}: label {label!r} is not a column of data/index.csv")
            truth = pd.to_numeric(self.index[label], errors="coerce")
            known = truth.isin([0, 1])
            self._cache[label] = {
                f: pd.Series(
                    truth[known & (self.fold == f)].astype(int).to_numpy(),
                    index=self.index["image_id"][known & (self.fold == f)].to_numpy(),
                )
                for f in SCORED_FOLDS
            }
        return self._cache[label]


def check_predictions(path: Path, frame, label: str, expected: dict, has_fold: bool) -> None:
    """Each scored fold of ``frame`` holds exactly the expected images with the expected truth.

    A file without a ``fold`` column is checked for val only (it predates test predictions).
    """
    folds = SCORED_FOLDS if has_fold else ("val",)
    for fold in folds:  # an image that does not belong (e.g. in the wrong fold) says more than a gap
        extra = sorted(set(frame.loc[frame["fold"] == fold, "image_id"]) - set(expected[fold].index))
        if extra:
            raise CxrError(
                f"{path}: image {extra[0]!r} is not a {fold} image of label {label!r} "
                f"in data/split.csv and data/index.csv"
            )
    for fold in folds:
        got = frame[frame["fold"] == fold]
        want = expected[fold]
        absent = sorted(set(want.index) - set(got["image_id"]))
        if absent:
            raise CxrError(
                f"{path} has {len(got)} {fold} row(s) but data/split.csv has {len(want)} {fold} "
                f"image(s) of label {label!r}; first missing: {absent[0]!r} (truncated or stale: "
                "rerun the cell)"
            )
        wrong = got["label"].to_numpy() != want.loc[got["image_id"]].to_numpy()
        if wrong.any():
            row = got[wrong].iloc[0]
            raise CxrError(
                f"{path}: image {row['image_id']!r} has label {row['label']} but data/index.csv "
                f"says {want[row['image_id']]} for {label!r}"
            )


def _read_cell(folder: Path) -> list[FindingResult]:
    """A grid cell's identity and, when it finished, its run record; predictions come later.

    A multi-label cell gives one :class:`FindingResult` per finding (``task="multilabel"``, sharing folder and record).
    """
    if not (folder / "cell.json").is_file():
        return [
            FindingResult(
                name=folder.name,
                label="",
                arch="",
                resolution=0,
                seed=0,
                path=folder,
                reason="not generated (no cell.json)",
            )
        ]
    cell = read_cell(folder)
    multilabel = cell.task == "multilabel"
    labels = list(cell.labels) if multilabel else [cell.label]
    findings = [
        FindingResult(
            name=f"{folder.name}/{label_slug(label)}" if multilabel else folder.name,
            label=label,
            arch=cell.arch,
            resolution=cell.resolution,
            seed=cell.seed,
            path=folder,
            task="multilabel" if multilabel else "binary",
        )
        for label in labels
    ]
    reason, run = "", None
    if not (folder / "run.json").exists():
        reason = "not run yet (no run.json)"
    elif not (folder / "predictions.csv").exists():
        reason = "run.json without predictions.csv"
    else:
        run = _read_json(folder / "run.json")
    for finding in findings:
        finding.reason, finding.run = reason, run
    return findings


def _by_finding(path: Path, frame, cells: list[FindingResult]) -> dict:
    """A multi-label cell's predictions split by finding (each as a binary cell's would be)."""
    if "finding" not in frame.columns:
        raise CxrError(
            f"{path} lacks column finding; a multi-label cell's predictions have one row per image and finding"
        )
    findings = frame["finding"].astype(str)
    known = {c.label for c in cells}
    other = sorted(set(findings) - known)
    if other:
        raise CxrError(f"{path}: finding {other[0]!r} is not one of the cell's labels in cell.json")
    out = {}
    for cell in cells:
        part = frame[findings == cell.label].drop(columns="finding").reset_index(drop=True)
        part.attrs["has_fold"] = frame.attrs["has_fold"]
        out[cell.label] = part
    return out


def grid_cells(path: Path, settings: dict) -> list[str]:
    """The cell names of the study's grid, in grid order."""
    grid = settings.get("grid")
    cells = grid.get("cells") if isinstance(grid, dict) else None
    if not cells or not isinstance(cells, list):
        raise CxrError(
            f"{path / 'study.json'} has no generated grid (grid.cells); "
            f"run `monai-cxr generate --study-dir {path}` first"
        )
    return [str(c) for c in cells]


def _none_finished(study: Study, bundles: Path, n: int) -> str:
    """Why no cell can be reported, as the cells say it: stale results, incomplete runs, or no run yet."""
    by_cell = {}
    for cell in study.missing:  # a multi-label cell is missing once per finding: name its folder once
        by_cell.setdefault(cell.path.name, cell.reason)
    stale = [(name, why) for name, why in by_cell.items() if why.startswith("stale: ")]
    partial = [name for name, why in by_cell.items() if why == "run.json without predictions.csv"]
    if stale:
        name, why = stale[0]
        more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
        return (
            f"no current cell in {bundles}: {len(stale)} of {n} finished but are stale; cell {name}{more}: "
            + why[len("stale: ") :]
        )
    if partial:
        return (
            f"no finished cell in {bundles}: {len(partial)} of {n} have run.json without predictions.csv "
            f"(cell {partial[0]}); delete their run.json and run `monai-cxr run --study-dir {study.path}`"
        )
    return (
        f"no finished cell in {bundles} ({n} in the grid, none has run.json); "
        f"run `monai-cxr run --study-dir {study.path}` first"
    )


def load_study(study_dir) -> Study:
    """Read ``study.json``, its grid's cells and the data they are checked against."""
    path = Path(study_dir)
    if not path.is_dir():
        raise CxrError(f"study directory {str(path)!r} does not exist")
    if not (path / "study.json").is_file():
        raise CxrError(f"{path / 'study.json'} not found; is {str(path)!r} a study directory?")
    study = Study(path=path, settings=_read_json(path / "study.json"))
    names = grid_cells(path, study.settings)
    bundles = path / "bundles"
    truth = None
    for name in names:
        cells = _read_cell(bundles / name)
        reason = stale_reason(path, cells[0].path) if cells[0].run is not None else None
        for cell in cells:
            if reason:  # results of other data or configs are never reported as current
                cell.run, cell.reason = None, f"stale: {reason}"
        if cells[0].run is None or cells[0].reason:
            study.missing.extend(cells)
            continue
        truth = truth or Truth(path)
        pred_path = cells[0].path / "predictions.csv"
        frame = read_predictions(pred_path)
        parts = _by_finding(pred_path, frame, cells) if cells[0].task == "multilabel" else {cells[0].label: frame}
        for cell in cells:
            cell.predictions = parts[cell.label]
            check_predictions(
                pred_path,
                cell.predictions,
                cell.label,
                truth.expected(cell.label, pred_path),
                cell.predictions.attrs["has_fold"],
            )
            study.finished.append(cell)
    listed = set(names)
    study.ignored = (
        sorted(p.name for p in bundles.iterdir() if p.is_dir() and p.name not in listed) if bundles.is_dir() else []
    )
    if not study.finished:
        raise CxrError(_none_finished(study, bundles, len(names)))
    keys = [c.key for c in study.finished]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise CxrError(f"two finished cells share label, task, arch, resolution, seed {dup}")
    for label in sorted({c.label for c in study.finished}):
        cells = [c for c in study.finished if c.label == label]
        study.folds[label] = "test" if all("test" in c.folds for c in cells) else "val"
    return study
