"""``monai-cxr generate``: one MONAI bundle per grid cell, filled in from the template.

The template's configs are data: a cell's bundle is the template's JSON with the cell's
values set as JSON values (absolute paths, numbers, the ``network_def`` of the
architecture). User text (labels, ids) goes only into ``cell.json`` and ``datalist.json``,
which are read with ``json``, never by MONAI's config parser, so it is never evaluated.

Each cell also gets ``inputs.json``: the fingerprint of the study's data (recorded by
``prepare``) and a hash of the cell's generated files; the run copies it into ``run.json``,
so a result made from other data or other configs is recognised as stale. A cell is written
under its lock, so a running cell is never changed under its run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from monai_cxr.cell.datalist import build
from monai_cxr.data.cache import cache_file, complete_resolutions
from monai_cxr.data.labels import label_columns, resolve_label
from monai_cxr.errors import CxrError, shown
from monai_cxr.fileio import write_text
from monai_cxr.grid.cells import Cell, cells
from monai_cxr.grid.networks import ARCHS, MIN_RESOLUTION, network_def
from monai_cxr.grid.settings import GridSettings
from monai_cxr.studydir import (
    INPUTS,
    data_fingerprint,
    load_study,
    lock_cell,
    read_inputs,
    update_study,
)

log = logging.getLogger(__name__)

__all__ = ["GridSettings", "cell_dirs", "clear_run_outputs", "generate", "study_cells", "template_dir"]

CONFIGS = ("train.json", "evaluate.json", "inference.json")
# Overlays copied as they are (no cell values): multi-GPU training under torchrun.
OVERLAYS = ("configs/multi_gpu_train.json",)
COPIED = ("configs/logging.conf", "docs/README.md", "LICENSE", *OVERLAYS)
# Files written by a run; removed when a cell has to be run again.
RUN_OUTPUTS = ("run.json", "predictions.csv", "models", "logs", "eval")


def template_dir() -> Path:
    """The template bundle: ``$MONAI_CXR_TEMPLATE``, else the package's copy of ``bundles/cxr_resolution``."""
    env = os.environ.get("MONAI_CXR_TEMPLATE")
    path = Path(env) if env else Path(__file__).resolve().parent / "template"
    if not (path / "configs" / "train.json").is_file():
        raise CxrError(f"template bundle not found at {path} (set MONAI_CXR_TEMPLATE to bundles/cxr_resolution)")
    return path


def _load_tables(study_dir: Path):
    data = study_dir / "data"
    index_csv, split_csv = data / "index.csv", data / "split.csv"
    for path in (index_csv, split_csv):
        if not path.is_file():
            raise CxrError(f"{path} not found; run `monai-cxr prepare --study-dir {study_dir}` first")
    # ids are text as written: a patient called "NA" must not become NaN
    index = pd.read_csv(index_csv, dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    split = pd.read_csv(split_csv, dtype={"image_id": str, "patient_id": str}, keep_default_na=False)
    if len(index) != len(split) or not (index["image_id"].to_numpy() == split["image_id"].to_numpy()).all():
        raise CxrError(f"{split_csv} does not list the images of {index_csv} in the same order; rerun prepare")
    return index, split


def _cache_resolutions(study_dir: Path) -> list[int]:
    return complete_resolutions(study_dir / "data" / "cache")


def check_grid(settings: GridSettings, index, split, cached: list[int]) -> None:
    """Refuse, with one line each, what the data cannot support."""
    for arch in settings.archs:
        if arch not in ARCHS:
            raise CxrError(f"architecture {arch!r} is not one of {', '.join(ARCHS)}")
        too_small = [r for r in settings.resolutions if r < MIN_RESOLUTION[arch]]
        if too_small:
            raise CxrError(f"resolution {too_small[0]} is below the {MIN_RESOLUTION[arch]} px that {arch} accepts")
    for r in settings.resolutions:
        if r not in cached:
            have = ", ".join(map(str, cached)) or "none"
            raise CxrError(f"resolution {r} is not in the cache (cached: {have}); "
                           f"rerun `monai-cxr prepare` with it in --resolutions")
    if settings.batch_size < 2:
        raise CxrError(f"batch size {settings.batch_size} is too small; batch normalisation needs at least 2")
    if 0 < settings.subsample < settings.batch_size:
        raise CxrError(f"subsample {settings.subsample} is smaller than the batch size {settings.batch_size}")
    if settings.epochs < 1:
        raise CxrError(f"epochs {settings.epochs} must be at least 1")
    for fold, name in (("train", "training"), ("val", "validation")):
        rows = (split["fold"] == fold).to_numpy()
        if not rows.any():
            raise CxrError(f"the {name} fold is empty; rerun prepare with more images")
        for label in settings.labels:
            values = index.loc[rows, label].to_numpy()  # 1, 0, or -1 = unknown (left out)
            positives, negatives = int((values == 1).sum()), int((values == 0).sum())
            if min(positives, negatives) == 0:
                kind = "no positive" if positives == 0 else "no negative"
                raise CxrError(f"label {label!r} has {kind} images in the {name} fold "
                               f"({positives} positive, {negatives} negative); its AUC is undefined")
            if fold == "val" and min(positives, negatives) < 2:
                raise CxrError(f"label {label!r} has {positives} positive and {negatives} negative images in the "
                               f"validation fold; the DeLong SE needs at least 2 of each")
    weights = settings.initial_weights
    if weights is not None and not Path(weights).is_file():
        raise CxrError(f"initial weights file {weights!r} not found")


def _safe_path(path: Path, what: str) -> str:
    text = str(path)
    if "#" in text:
        raise CxrError(f"{what} {text!r} contains '#', which MONAI configs rewrite to '::'; use a path without '#'")
    return text


def render(cell: Cell, cell_dir: Path, cache_file: Path, settings: GridSettings, template: Path) -> dict[str, str]:
    """The text of every file of the cell's bundle except its datalist, by relative path."""
    values = {
        **settings.bundle_values(),
        "bundle_root": _safe_path(cell_dir, "study path"),
        "cache_file": _safe_path(cache_file, "cache path"),
        "arch": cell.arch,
        "resolution": cell.resolution,
        "seed": cell.seed,
        "network_def": network_def(cell.arch),
    }
    files = {}
    for name in CONFIGS:
        config = json.loads((template / "configs" / name).read_text())
        for key, value in values.items():
            if key in config:
                config[key] = value
        files[f"configs/{name}"] = json.dumps(config, indent=4) + "\n"
    meta = json.loads((template / "configs" / "metadata.json").read_text())
    meta["name"] = f"{meta['name']} ({cell.arch}, {cell.resolution} px)"
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [cell.resolution, cell.resolution]
    files["configs/metadata.json"] = json.dumps(meta, indent=4) + "\n"
    for name in COPIED:
        files[name] = (template / name).read_text()
    files["cell.json"] = json.dumps(cell.as_dict(), indent=2) + "\n"
    return files


def cell_dirs(study_dir: str | os.PathLike) -> Path:
    return Path(study_dir).resolve() / "bundles"


def study_cells(study_dir: str | os.PathLike) -> list[str]:
    """Names of the cells of the study's current grid, in grid order."""
    grid = load_study(study_dir).get("grid") or {}
    if not grid.get("cells"):
        raise CxrError(f"{study_dir} has no generated grid; run `monai-cxr generate --study-dir {study_dir}` first")
    return list(grid["cells"])


def clear_run_outputs(cell_dir: Path) -> None:
    """Remove what a run wrote (results, checkpoints, logs), so the cell runs afresh."""
    for name in RUN_OUTPUTS:
        path = cell_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _unique(values, what: str) -> list:
    """``values`` without repeats, in order; a note names what was dropped."""
    out = []
    for value in values:
        if value not in out:
            out.append(value)
    if len(out) < len(values):
        log.info(f"note: {what} given more than once are used once: {', '.join(map(str, out))}")
    return out


def normalise(settings: GridSettings, columns) -> GridSettings:
    """The lists of a grid resolved once: labels to the data's columns (aliases, case), archs to
    their names, repeats dropped with a note, so one finding is never studied twice."""
    labels, repeated = [], []
    for label in settings.labels:
        column = resolve_label(label, columns)
        if column in labels:
            repeated.append(f"{shown(label)} (= {shown(column)})")
        else:
            labels.append(column)
    if repeated:
        log.info(f"note: labels naming a column already chosen are studied once: {', '.join(repeated)}")
    archs = _unique([str(a).strip().lower() if str(a).strip().lower() in ARCHS else a for a in settings.archs],
                    "architectures")
    resolutions = sorted(_unique([int(r) for r in settings.resolutions], "resolutions"))
    seeds = sorted(_unique([int(s) for s in settings.seeds], "seeds"))
    return replace(settings, labels=labels, archs=archs, resolutions=resolutions, seeds=seeds)


def cell_inputs(data: str, files: dict[str, str]) -> str:
    """``inputs.json`` of a cell: the data fingerprint and a sha256 of its generated files."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode() + files[name].encode())
    return json.dumps({"data": data, "config": digest.hexdigest()}, indent=2) + "\n"


def _ran_on(cell_dir: Path) -> dict | None:
    """The inputs a finished run recorded (``run.json["inputs"]``), if it recorded any."""
    try:
        run = json.loads((cell_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return run.get("inputs") if isinstance(run, dict) else None


def _why_finished(cell_dir: Path, changed: list[str], data: str) -> str:
    """Why a finished cell no longer matches what generate would write now."""
    try:
        before = read_inputs(cell_dir)
    except CxrError:
        before = None
    if before is not None and before.get("data") != data:
        return "on other data (prepare ran since it was generated)"
    other = [name for name in changed if name != INPUTS]
    if other:
        return f"with other settings ({other[0]} differs)"
    return "with other configs than its bundle now holds (it was generated again while it ran)"


def _current_data(study_dir: Path) -> str:
    """The data fingerprint now, checked against the one ``prepare`` recorded."""
    current = data_fingerprint(study_dir)
    recorded = (load_study(study_dir).get("data") or {}).get("fingerprint")
    if recorded is not None and recorded != current:
        raise CxrError(f"{study_dir / 'data'} is not what prepare last recorded in study.json (a prepare was "
                       f"interrupted, or a file there was changed); run `monai-cxr prepare` again first")
    return current


def generate(study_dir: str | os.PathLike, settings: GridSettings, force: bool = False) -> list[Path]:
    """Write the bundle of every cell of ``settings`` under ``STUDY/bundles``; return their folders.

    Unchanged cells are left as they are (a finished cell stays finished). A finished cell
    whose bundle would change, or that was run from other data or other configs, is refused
    unless ``force``, which discards its results. A cell that is running (its lock is held)
    is refused before anything is written.
    """
    study_dir = Path(study_dir).resolve()
    _safe_path(study_dir, "study path")
    if not (study_dir / "study.json").is_file():
        raise CxrError(f"{study_dir / 'study.json'} not found; run `monai-cxr prepare --study-dir {study_dir}` first")
    if settings.initial_weights:  # a copy: the caller's settings (a preset's, say) stay as given
        settings = replace(settings, initial_weights=_safe_path(Path(settings.initial_weights).resolve(),
                                                               "initial weights path"))
    index, split = _load_tables(study_dir)
    data = _current_data(study_dir)
    # a label may be named as any release names it (Effusion / Pleural Effusion): use the column;
    # an unknown one is refused here with the dataset's labels
    settings = normalise(settings, label_columns(index))
    check_grid(settings, index, split, _cache_resolutions(study_dir))
    template = template_dir()
    grid = cells(settings.labels, settings.resolutions, settings.archs, settings.seeds)
    datalists = {label: json.dumps(build(index, split, label)) + "\n" for label in settings.labels}

    plans = []  # (cell, folder, files, changed): nothing is written before every cell is checked
    for cell in grid:
        cell_dir = cell_dirs(study_dir) / cell.name
        files = render(cell, cell_dir, cache_file(study_dir / "data" / "cache", cell.resolution), settings, template)
        files["datalist.json"] = datalists[cell.label]
        files[INPUTS] = cell_inputs(data, files)
        changed = [name for name, text in files.items()
                   if not (cell_dir / name).is_file() or (cell_dir / name).read_text() != text]
        finished = (cell_dir / "run.json").is_file()
        ran_on = _ran_on(cell_dir) if finished else None
        if finished and ran_on is not None and ran_on != json.loads(files[INPUTS]) and not changed:
            changed = [INPUTS]  # configs agree now, but the run used others (regenerated while it ran)
        if finished and changed and not force:
            raise CxrError(f"cell {cell.name} has finished {_why_finished(cell_dir, changed, data)}; use --force "
                           f"to discard its results, or another --study-dir")
        plans.append((cell, cell_dir, files, changed))

    locks = {}
    try:
        for cell, cell_dir, _, changed in plans:  # existing cells first: a running one stops everything
            if changed and cell_dir.is_dir():
                fd = lock_cell(cell_dir)
                if fd is None:
                    raise CxrError(f"cell {cell.name} is running (another process holds {cell_dir / '.lock'}); "
                                   f"let it finish or stop that run, then generate again")
                locks[cell.name] = fd
        written, kept, replaced = 0, 0, 0
        for cell, cell_dir, files, changed in plans:
            if changed and cell.name not in locks:
                cell_dir.mkdir(parents=True, exist_ok=True)
                locks[cell.name] = lock_cell(cell_dir)  # a new folder: nobody else can hold it
            if changed and (cell_dir / "run.json").is_file():
                clear_run_outputs(cell_dir)
                replaced += 1
            for name in [n for n in changed if n != INPUTS] + [INPUTS] * (INPUTS in changed):
                write_text(cell_dir / name, files[name])  # inputs.json last: it vouches for the rest
            written += bool(changed)
            kept += not changed
    finally:
        for fd in locks.values():
            if fd is not None:
                os.close(fd)

    previous = load_study(study_dir).get("grid") or {}
    record = {**asdict(settings), "cells": [c.name for c in grid]}
    if previous != record:
        update_study(study_dir, grid=record)
    log.info(f"generated {len(grid)} cells in {cell_dirs(study_dir)} "
         f"({written} written, {kept} unchanged" + (f", {replaced} reset" if replaced else "") + ")")
    return [cell_dir for _, cell_dir, _, _ in plans]
