"""``monai-cxr generate``: one MONAI bundle per grid cell, the template plus a small override.

A cell's bundle is the template's configs as they are plus ``configs/override.json``: the cell's
values (architecture and its ``network_def``, resolution, seed, the grid's training settings)
as JSON values, which the runner lists after ``train.json``. Every path in the configs is
relative to ``bundle_root`` (the cell folder), so a study can be copied, moved or mounted
elsewhere. User text (labels, ids) goes only into ``cell.json`` and ``datalist.json``, which
are read with ``json``, never by MONAI's config parser, so it is never evaluated; the documents
name the finding only in plain words (:mod:`monai_cxr.grid.docs`).

Architectures are the built-in ones or a user's (``--arch-file``), each checked on the network
itself (its smallest input). ``--pretrained ARCH=PATH`` files are loaded once here into a fresh
network of their architecture, so a file for another architecture is refused before anything
trains; the override names the file (relative to the cell when it lies inside the study), its
sha256 (a changed file makes the cell's settings change) and the normalisation the start
expects (``imagenet`` for a folded ImageNet stem, else the source cell's, else ``image``).

Each cell also gets ``inputs.json``: the fingerprint of the study's data (recorded by
``prepare``) and a hash of the cell's generated files; the run copies it into ``run.json``,
so a result made from other data or other configs is recognised as stale. A cell is written
under its lock, so a running cell is never changed under its run.

Over 400 lines: rendering a cell, its checks, the staleness records and the locked write are
one transaction per grid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from monai_cxr.cell.datalist import build, build_multilabel
from monai_cxr.cell.pretrained import NORMALIZATIONS, check_pretrained
from monai_cxr.data.cache import complete_resolutions
from monai_cxr.data.labels import fold_counts, label_columns, resolve_label
from monai_cxr.errors import CxrError, shown
from monai_cxr.fileio import write_text
from monai_cxr.grid.cells import Cell, cells
from monai_cxr.grid.docs import cell_metadata, cell_readme, data_license
from monai_cxr.grid.networks import ARCHS, arch_defs, check_input_size, network_def
from monai_cxr.grid.settings import GridSettings
from monai_cxr.studydir import (
    CELL_DOCUMENTS,
    CELL_FILES,
    INPUTS,
    config_hash,
    data_fingerprint,
    load_study,
    lock_cell,
    read_inputs,
    update_study,
)

log = logging.getLogger(__name__)

__all__ = ["GridSettings", "cell_dirs", "clear_run_outputs", "generate", "study_cells", "template_dir"]

# The template's files a cell holds as they are; the cell's own values are in OVERRIDE.
COPIED = (
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "LICENSE",
)
# inference.json stands alone (a cell's model is often used without the rest): its top-level keys that the
# override sets (network_def, resolution, square, ...) are filled in, so the stock runner needs only it.
INFERENCE = "configs/inference.json"
OVERRIDE = "configs/override.json"
# What a cell says about itself (its README also holds the run's result): a finished cell keeps its own.
DOCUMENTS = CELL_DOCUMENTS
# Files written by a run; removed when a cell has to be run again.
RUN_OUTPUTS = ("run.json", "predictions.csv", "models", "logs", "eval")
# What an interrupted run resumes from (models/resume-*.pt beside the checkpoint it selected so far) and
# goes on writing (its log, TensorBoard events); the rest of its outputs are stale.
RESUMED = ("models", "logs")


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


def check_networks(settings: GridSettings) -> dict[str, dict]:
    """The ``network_def`` of every architecture of the grid, each checked at the grid's smallest resolution."""
    defs = arch_defs(settings.archs, settings.arch_file)
    outputs = len(settings.labels) if "multilabel" in settings.task else 1
    for arch in defs:
        check_input_size(arch, network_def(arch, defs, outputs), settings.resolutions)
    other = [arch for arch in settings.pretrained if arch not in defs]
    if other:
        raise CxrError(
            f"pretrained weights for {other[0]!r}, which is not an architecture of the grid ({', '.join(defs)})"
        )
    return defs


def check_grid(settings: GridSettings, index, split, cached: list[int]) -> None:
    """Refuse, with one line each, what the data cannot support."""
    for r in settings.resolutions:
        if r not in cached:
            have = ", ".join(map(str, cached)) or "none"
            raise CxrError(
                f"resolution {r} is not in the cache (cached: {have}); "
                f"rerun `monai-cxr prepare` with it in --resolutions"
            )
    settings.check()
    if settings.epochs < 1:
        raise CxrError(f"epochs {settings.epochs} must be at least 1")
    names = {"train": "training", "val": "validation", "test": "test"}
    folds = set(split["fold"])
    for fold in ("train", "val"):
        if fold not in folds:
            raise CxrError(f"the {names[fold]} fold is empty; rerun prepare with more images")
    for label in settings.labels:
        counts = fold_counts(index, split, label)  # (positives, negatives); unknown (-1) images left out
        for fold, (positives, negatives) in counts.items():
            if fold == "train" and min(positives, negatives) == 0:
                kind = "no positive" if positives == 0 else "no negative"
                raise CxrError(
                    f"label {label!r} has {kind} images in the training fold "
                    f"({positives} positive, {negatives} negative); it cannot be learnt"
                )
            if fold in ("val", "test") and min(positives, negatives) < 2:
                raise CxrError(
                    f"label {label!r} has {positives} positive and {negatives} negative images in the "
                    f"{names[fold]} fold; its AUC and DeLong SE need at least 2 of each"
                )


def check_epoch_batches(settings: GridSettings, datalists: dict) -> None:
    """With full epochs (``--subsample 0``), refuse a batch larger than a cell's training images.

    The training loader drops the last incomplete batch, so such a cell would train for no step at all and fail
    only when its missing model is looked for. (Under DDP each rank takes ``batch // world_size`` of its
    ``images // world_size``; the single-process check covers it up to rounding.)
    """
    if settings.subsample != 0:
        return  # subsample epochs draw `subsample` images; check() compares that with the batch
    for key, text in datalists.items():
        images = len(json.loads(text)["training"])
        what = f"label {key!r} has" if isinstance(key, str) else f"labels {', '.join(key)} have"
        for (arch, resolution), batch in settings.batches().items():
            if images < batch:
                raise CxrError(
                    f"{what} {images} training images, fewer than the batch size {batch} ({arch}, "
                    f"{resolution} px); with --subsample 0 an epoch would have no full batch"
                )


def _safe_path(path: Path, what: str) -> str:
    text = str(path)
    if "#" in text:
        raise CxrError(f"{what} {text!r} contains '#', which MONAI configs rewrite to '::'; use a path without '#'")
    return text


def _source_normalize(path: Path) -> str:
    """The normalisation a one-channel weights file was trained with: its cell's, when it is a cell's model."""
    config = path.parent.parent / "configs" / "override.json"
    if path.parent.name == "models" and config.is_file():
        try:
            value = json.loads(config.read_text()).get("normalize", "image")
        except (OSError, ValueError):
            value = "image"
        return value if value in NORMALIZATIONS else "image"
    return "image"


def pretrained_starts(settings: GridSettings, defs: dict[str, dict], study_dir: Path) -> dict[str, dict]:
    """``{arch: {"path", "in_study", "sha256", "normalize"}}`` of the grid's ``--pretrained`` files, each loaded once
    into a fresh network of its architecture (refused in one line: missing, ``#`` in the path, another
    architecture's file). ``in_study`` is the path relative to the study when the file lies inside it."""
    starts = {}
    for arch, given in settings.pretrained.items():
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise CxrError(
                f"pretrained weights file {given} for {arch} not found; give a local file (nothing is downloaded)"
            )
        try:
            in_study = path.relative_to(study_dir).as_posix()
        except ValueError:
            in_study = None
        _safe_path(Path(in_study) if in_study else path, f"pretrained weights path for {arch}")
        record = check_pretrained(network_def(arch, defs), str(path))
        normalize = "imagenet" if record["normalization"] else _source_normalize(path)
        starts[arch] = {"path": str(path), "in_study": in_study, "sha256": record["sha256"], "normalize": normalize}
        log.info(
            f"pretrained {arch}: {path.name} matches {record['loaded']} of {record['total']} tensors "
            f"(inputs normalised: {normalize})"
        )
    return starts


def override(
    cell: Cell, settings: GridSettings, square: str = "pad", defs: dict | None = None, start: dict | None = None
) -> dict:
    """The cell's values, merged over the template's configs (``configs/override.json``).

    ``square`` is the study's policy (``study.json["data"]["square"]``): inference on image files
    makes them square as the cache did. ``start`` is the arch's entry of :func:`pretrained_starts`: a file
    inside the study is named relative to the cell (``../../`` is the study), so the study can move.
    """
    values = {
        "arch": cell.arch,
        "resolution": cell.resolution,
        "seed": cell.seed,
        **settings.bundle_values(),
        "batch_size": settings.batch_for(cell.arch, cell.resolution),
        "pretrained": None,
        "normalize": "image",
    }
    if start:
        values.update(
            pretrained=f"../../{start['in_study']}" if start["in_study"] else start["path"],
            pretrained_sha256=start["sha256"],
            normalize=start["normalize"],
        )
    return {**values, "network_def": network_def(cell.arch, defs, len(cell.labels) or 1), "square": square}


def render(
    cell: Cell,
    settings: GridSettings,
    template: Path,
    study: dict,
    defs: dict | None = None,
    starts: dict | None = None,
) -> dict[str, str]:
    """The text of every file of the cell's bundle except its datalist, by relative path."""
    files = {name: (template / name).read_text() for name in COPIED}
    square = (study.get("data") or {}).get("square", "pad")
    start = (starts or {}).get(cell.arch)
    values = override(cell, settings, square, defs, start)
    files[OVERRIDE] = json.dumps(values, indent=4) + "\n"
    inference = json.loads((template / INFERENCE).read_text())
    inference.update({key: value for key, value in values.items() if key in inference})
    files[INFERENCE] = json.dumps(inference, indent=4) + "\n"
    meta = cell_metadata(json.loads((template / "configs" / "metadata.json").read_text()), cell, settings, study, start)
    files["configs/metadata.json"] = json.dumps(meta, indent=4) + "\n"
    files["docs/README.md"] = cell_readme((template / "docs" / "README.md").read_text(), cell, settings, study, start)
    files["docs/data_license.txt"] = data_license(study)
    files["cell.json"] = json.dumps(cell.as_dict(), indent=2) + "\n"
    return files


def _difference(name: str, old: str, new: str) -> str:
    """What differs in a file, in a few words: up to three short changed values of a JSON object, else its name."""
    try:
        old_obj, new_obj = json.loads(old), json.loads(new)
    except ValueError:
        return f"{name} differs"
    if not (isinstance(old_obj, dict) and isinstance(new_obj, dict)):
        return f"{name} differs"
    changes = [
        f"{k} {json.dumps(old_obj.get(k))} -> {json.dumps(new_obj.get(k))}"
        for k in {**old_obj, **new_obj}
        if old_obj.get(k) != new_obj.get(k)
    ]
    if not changes or len(changes) > 3 or any(len(c) > 80 for c in changes):
        return f"{name} differs"
    return f"{name} differs: {', '.join(changes)}"


def _settings_text(name: str, text: str) -> str:
    """What of a file decides how the cell trains and is scored: everything but its documents."""
    return "" if name in DOCUMENTS else text


def cell_dirs(study_dir: str | os.PathLike) -> Path:
    return Path(study_dir).resolve() / "bundles"


def study_cells(study_dir: str | os.PathLike) -> list[str]:
    """Names of the cells of the study's current grid, in grid order."""
    grid = load_study(study_dir).get("grid") or {}
    if not grid.get("cells"):
        raise CxrError(f"{study_dir} has no generated grid; run `monai-cxr generate --study-dir {study_dir}` first")
    return list(grid["cells"])


def clear_run_outputs(cell_dir: Path, resume: bool = False) -> None:
    """Remove what a run wrote (results, checkpoints, logs), so the cell runs afresh.

    With ``resume`` (an interrupted run of the same settings left a resume checkpoint), ``RESUMED``
    stays: the run goes on from its checkpoint and appends to its log.
    """
    for name in RUN_OUTPUTS:
        if resume and name in RESUMED:
            continue
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

    def arch_name(arch):
        return str(arch).strip().lower() if str(arch).strip().lower() in ARCHS else str(arch).strip()

    archs = _unique([arch_name(a) for a in settings.archs], "architectures")
    pretrained = {arch_name(a): path for a, path in settings.pretrained.items()}
    resolutions = sorted(_unique([int(r) for r in settings.resolutions], "resolutions"))
    seeds = sorted(_unique([int(s) for s in settings.seeds], "seeds"))
    return replace(settings, labels=labels, archs=archs, resolutions=resolutions, seeds=seeds, pretrained=pretrained)


def cell_inputs(data: str, files: dict[str, str]) -> str:
    """``inputs.json`` of a cell: the data fingerprint and :func:`config_hash` of its generated files."""
    if set(files) != set(CELL_FILES):  # stale_reason recomputes the hash from CELL_FILES: they must agree
        raise AssertionError(f"generated files {sorted(set(files) ^ set(CELL_FILES))} disagree with CELL_FILES")
    return json.dumps({"data": data, "config": config_hash(files)}, indent=2) + "\n"


def _ran_on(cell_dir: Path) -> dict | None:
    """The inputs a finished run recorded (``run.json["inputs"]``), if it recorded any."""
    try:
        run = json.loads((cell_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return run.get("inputs") if isinstance(run, dict) else None


def _why_finished(cell_dir: Path, changed: list[str], data: str, files: dict[str, str]) -> str:
    """Why a finished cell no longer matches what generate would write now."""
    try:
        before = read_inputs(cell_dir)
    except CxrError:
        before = None
    if before is not None and before.get("data") != data:
        return "on other data (prepare ran since it was generated)"
    other = [name for name in changed if name != INPUTS]
    if other:
        name = other[0]
        what = (
            _difference(name, (cell_dir / name).read_text(), files[name])
            if (cell_dir / name).is_file()
            else f"{name} is missing"
        )
        return f"with other settings ({what})"
    return "with other configs than its bundle now holds (it was generated again while it ran)"


def _current_data(study_dir: Path) -> str:
    """The data fingerprint now, checked against the one ``prepare`` recorded."""
    current = data_fingerprint(study_dir)
    recorded = (load_study(study_dir).get("data") or {}).get("fingerprint")
    if recorded is not None and recorded != current:
        raise CxrError(
            f"{study_dir / 'data'} is not what prepare last recorded in study.json (a prepare was "
            f"interrupted, or a file there was changed); run `monai-cxr prepare` again first"
        )
    return current


def generate(study_dir: str | os.PathLike, settings: GridSettings, force: bool = False) -> list[Path]:
    """Write the bundle of every cell of ``settings`` under ``STUDY/bundles``; return their folders.

    Unchanged cells are left as they are (a finished cell stays finished). A finished cell
    whose bundle would change, or that was run from other data or other configs, is refused
    unless ``force``, which discards its results. A cell that is running (its lock is held)
    is refused before anything is written.
    """
    study_dir = Path(study_dir).resolve()
    if not (study_dir / "study.json").is_file():
        raise CxrError(f"{study_dir / 'study.json'} not found; run `monai-cxr prepare --study-dir {study_dir}` first")
    # a copy with absolute paths (study.json records them): the caller's settings (a preset's, say) stay as given
    settings = replace(
        settings,
        pretrained={arch: str(Path(path).expanduser().resolve()) for arch, path in settings.pretrained.items()},
        arch_file=str(Path(settings.arch_file).expanduser().resolve()) if settings.arch_file else None,
    )
    index, split = _load_tables(study_dir)
    data = _current_data(study_dir)
    # a label may be named as any release names it (Effusion / Pleural Effusion): use the column;
    # an unknown one is refused here with the dataset's labels
    settings = normalise(settings, label_columns(index))
    defs = check_networks(settings)
    check_grid(settings, index, split, _cache_resolutions(study_dir))
    grid = cells(settings.labels, settings.resolutions, settings.archs, settings.seeds, settings.task)
    starts = pretrained_starts(settings, defs, study_dir)
    template = template_dir()
    study = load_study(study_dir)
    datalists = {
        label: json.dumps(build(index, split, label)) + "\n" for label in settings.labels if "binary" in settings.task
    }
    if "multilabel" in settings.task:
        datalists[tuple(settings.labels)] = json.dumps(build_multilabel(index, split, settings.labels)) + "\n"
    check_epoch_batches(settings, datalists)

    plans = []  # (cell, folder, files, differs, changed): nothing is written before every cell is checked
    for cell in grid:
        cell_dir = cell_dirs(study_dir) / cell.name
        files = render(cell, settings, template, study, defs, starts)
        files["datalist.json"] = datalists[cell.labels or cell.label]
        files[INPUTS] = cell_inputs(data, files)
        differs = [
            name
            for name, text in files.items()
            if not (cell_dir / name).is_file() or (cell_dir / name).read_text() != text
        ]
        changed = [
            name
            for name in differs
            if not (cell_dir / name).is_file()
            or _settings_text(name, (cell_dir / name).read_text()) != _settings_text(name, files[name])
        ]
        finished = (cell_dir / "run.json").is_file()
        ran_on = _ran_on(cell_dir) if finished else None
        if finished and ran_on is not None and ran_on != json.loads(files[INPUTS]) and not changed:
            changed = [INPUTS]  # configs agree now, but the run used others (regenerated while it ran)
        if finished and changed and not force:
            raise CxrError(
                f"cell {cell.name} has finished {_why_finished(cell_dir, changed, data, files)}; use --force "
                f"to discard its results, or another --study-dir"
            )
        if finished and not changed:
            differs = []  # a finished cell keeps its documents: its result, the versions that made it
        plans.append((cell, cell_dir, files, differs, changed))

    locks = {}
    try:
        for cell, cell_dir, _, differs, _ in plans:  # existing cells first: a running one stops everything
            if differs and cell_dir.is_dir():
                fd = lock_cell(cell_dir)
                if fd is None:
                    raise CxrError(
                        f"cell {cell.name} is running (another process holds {cell_dir / '.lock'}); "
                        f"let it finish or stop that run, then generate again"
                    )
                locks[cell.name] = fd
        written, kept, replaced = 0, 0, 0
        for cell, cell_dir, files, differs, changed in plans:
            if differs and cell.name not in locks:
                cell_dir.mkdir(parents=True, exist_ok=True)
                locks[cell.name] = lock_cell(cell_dir)  # a new folder: nobody else can hold it
            if changed and (cell_dir / "run.json").is_file():
                clear_run_outputs(cell_dir)
                replaced += 1
            for name in [n for n in differs if n != INPUTS] + [INPUTS] * (INPUTS in differs):
                write_text(cell_dir / name, files[name])  # inputs.json last: it vouches for the rest
            written += bool(differs)
            kept += not differs
    finally:
        for fd in locks.values():
            if fd is not None:
                os.close(fd)

    previous = load_study(study_dir).get("grid") or {}
    record = {
        **asdict(settings),
        "cells": [c.name for c in grid],
        "networks": {arch: definition for arch, definition in defs.items() if arch not in ARCHS},
    }
    if previous != record:
        update_study(study_dir, grid=record)
    log.info(
        f"generated {len(grid)} cells in {cell_dirs(study_dir)} "
        f"({written} written, {kept} unchanged" + (f", {replaced} reset" if replaced else "") + ")"
    )
    return [cell_dir for _, cell_dir, _, _, _ in plans]
