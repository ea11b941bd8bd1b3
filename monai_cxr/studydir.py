"""``STUDY/study.json`` and what each stage was built from: fingerprints, cell inputs, cell locks.

Every stage records what it was built from, so that a stale result is refused or rebuilt,
never reported as current:

- ``prepare`` records ``study.json["data"]["fingerprint"]``: :func:`data_fingerprint` of the
  files it wrote (``index.csv``, ``split.csv`` and the cache manifest's own fingerprint).
- ``generate`` writes ``CELL/inputs.json``: ``{"data": <that fingerprint>, "config": <sha256
  of the cell's generated files>}``; the bundle's run record copies it into ``run.json["inputs"]``.
- ``run`` refuses, and the report leaves out, a cell whose inputs no longer match
  (:func:`stale_reason`).
- a run's resume checkpoint is named by :func:`resume_fingerprint` of what the cell trains
  with (:func:`resume_file`), so a killed cell resumes only under the settings that wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None

__all__ = [
    "CELL_DOCUMENTS",
    "CELL_FILES",
    "INPUTS",
    "RESUME_FILES",
    "config_hash",
    "edited_configs",
    "data_fingerprint",
    "load_study",
    "lock_cell",
    "package_versions",
    "read_inputs",
    "resume_file",
    "resume_fingerprint",
    "stale_reason",
    "study_path",
    "update_study",
]

PACKAGES = (
    "monai-cxr",
    "monai",
    "torch",
    "pytorch-ignite",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "pillow",
    "nibabel",
)
INPUTS = "inputs.json"
DATA_FILES = ("data/index.csv", "data/split.csv")
MANIFEST = "data/cache/manifest.json"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers (read without importing them)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def study_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / "study.json"


def load_study(study_dir: str | Path) -> dict:
    """The study's settings; ``{}`` for a study that has none yet."""
    path = study_path(study_dir)
    if not path.is_file():
        return {}
    try:
        study = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CxrError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise CxrError(f"{path} is not a text file") from None
    if not isinstance(study, dict):
        raise CxrError(f"{path} must hold a JSON object, not {type(study).__name__}")
    return study


def update_study(study_dir: str | Path, **sections) -> dict:
    """Replace the named top-level sections of study.json, keep the rest, refresh versions."""
    study = load_study(study_dir)
    study.update(sections)
    study["versions"] = package_versions()
    write_json(study_path(study_dir), study)
    return study


# ------------------------------------------------------------------------ fingerprints
_FINGERPRINTS: dict[tuple, str] = {}


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def data_fingerprint(study_dir: str | Path) -> str:
    """sha256 of ``index.csv``, ``split.csv`` and the cache manifest's fingerprint, as they are now.

    Content, not times: rerunning ``prepare`` with the same data gives the same fingerprint, so
    nothing downstream is rebuilt; new labels, a new split or a rebuilt cache give another one.
    A CxrError when the tables are missing (no ``prepare`` yet).
    """
    root = Path(study_dir).resolve()
    key = tuple(_stamp(root / rel) for rel in (*DATA_FILES, MANIFEST))
    if key in _FINGERPRINTS:  # the report asks once per cell; hash the tables once
        return _FINGERPRINTS[key]
    digest = hashlib.sha256()
    for rel in DATA_FILES:
        path = root / rel
        if not path.is_file():
            raise CxrError(f"{path} not found; run `monai-cxr prepare --study-dir {root}` first")
        digest.update(f"{rel}\n".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        manifest = {}
    cache = manifest if isinstance(manifest, dict) else {}
    digest.update(f"cache\n{cache.get('format')}|{cache.get('fingerprint')}".encode())
    _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def finished_on_data(study_dir: str | Path) -> list[str]:
    """The finished cells (``bundles/*/run.json``) trained on the study's current data, by name."""
    try:
        current = data_fingerprint(study_dir)
    except CxrError:
        return []
    names = []
    for run in sorted((Path(study_dir) / "bundles").glob("*/run.json")):
        try:
            inputs = json.loads(run.read_text()).get("inputs") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(inputs, dict) and inputs.get("data") == current:
            names.append(run.parent.name)
    return names


def read_inputs(cell_dir: str | Path) -> dict | None:
    """The cell's ``inputs.json`` (what ``generate`` built it from), or None if it has none."""
    path = Path(cell_dir) / INPUTS
    try:
        inputs = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CxrError(f"{path} is not valid JSON; run `monai-cxr generate` again") from None
    if not isinstance(inputs, dict):
        raise CxrError(f"{path} must hold a JSON object; run `monai-cxr generate` again")
    return inputs


# What ``generate`` writes into a cell besides inputs.json (its ``render`` plus the datalist), and which of
# them only document the cell: their text does not count (a finished cell keeps its own). Files a run writes
# (run.json, predictions.csv, models/, logs/, eval/, inference/) are none of these, so a run never makes a cell stale.
CELL_FILES = (
    "configs/train.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "configs/override.json",
    "configs/inference.json",
    "configs/metadata.json",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "cell.json",
    "datalist.json",
)
CELL_DOCUMENTS = ("configs/metadata.json", "docs/README.md", "docs/data_license.txt", "LICENSE")


def config_hash(files: dict[str, str]) -> str:
    """``inputs.json["config"]``: sha256 of a cell's generated files (text by relative path), documents blank."""
    digest = hashlib.sha256()
    for name in sorted(files):
        text = "" if name in CELL_DOCUMENTS else files[name]
        digest.update(f"{name}\0{len(text)}\0".encode() + text.encode())
    return digest.hexdigest()


def edited_configs(cell_dir: str | Path, recorded: str | None) -> list[str]:
    """The cell's generated files changed since ``generate`` recorded ``recorded``; ``[]`` when none was.

    The hash is recomputed as :func:`config_hash` made it (read afresh each time: an edit may keep a
    file's size and time stamp); when it differs, the files named are those missing or written after
    ``inputs.json`` (generate writes it last), else every settings file.
    """
    cell_dir = Path(cell_dir)
    texts, missing = {}, []
    for name in CELL_FILES:
        path = cell_dir / name
        if name in CELL_DOCUMENTS:
            texts[name] = ""
        elif path.is_file():
            texts[name] = path.read_text(errors="replace")
        else:
            missing.append(name)
    if missing:
        return missing
    if config_hash(texts) == recorded:
        return []
    settings = [name for name in CELL_FILES if name not in CELL_DOCUMENTS]
    try:
        written = (cell_dir / INPUTS).stat().st_mtime_ns
        later = [name for name in settings if (cell_dir / name).stat().st_mtime_ns > written]
    except OSError:
        later = []
    return later or settings


def stale_reason(study_dir: str | Path, cell_dir: str | Path) -> str | None:
    """Why the cell's results are not current, or None when they are (or cannot be checked).

    Stale: the run recorded other inputs (``run.json["inputs"]``) than the bundle now holds
    (it was generated again after, or while, it ran), or the bundle was generated from other
    data than the study's current tables and cache (``prepare`` ran since), or its generated files
    were edited after ``generate`` (:func:`edited_configs`). A cell without
    ``inputs.json`` (made by hand, or before monai-cxr recorded inputs) cannot be checked.
    """
    cell_dir = Path(cell_dir)
    try:
        inputs = read_inputs(cell_dir)
    except CxrError as exc:
        return str(exc)
    if inputs is None:
        return None
    try:
        run = json.loads((cell_dir / "run.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        run = None
    if isinstance(run, dict) and run.get("inputs") is not None and run["inputs"] != inputs:
        return "it ran on other inputs than its bundle now holds (generated again after it ran); run it again"
    try:
        current = data_fingerprint(study_dir)
    except CxrError:
        return None  # no tables to compare with: a study folder holding bundles only
    if inputs.get("data") != current:
        return (
            "it was generated from other data (prepare ran since); run `monai-cxr generate` "
            "(--force for finished cells) and `monai-cxr run` again"
        )
    edited = edited_configs(cell_dir, inputs.get("config"))
    if edited:
        shown = ", ".join(edited[:3]) + (f" and {len(edited) - 3} more" if len(edited) > 3 else "")
        return (
            f"its configs were edited after generate ({shown}); run `monai-cxr generate --force` "
            "with the study's grid to restore them"
        )
    return None


# The cell's files that decide how it trains (documents, evaluate.json and inference.json do not).
RESUME_FILES = ("configs/train.json", "configs/override.json", "configs/multi_gpu_train.json", "datalist.json", INPUTS)


def resume_fingerprint(cell_dir: str | Path, world_size: int = 1) -> str:
    """sha256 of what a cell trains with: the files of ``RESUME_FILES`` (their bytes) and the number of processes."""
    digest = hashlib.sha256(f"world_size\0{int(world_size)}\0".encode())
    for name in RESUME_FILES:
        path = Path(cell_dir) / name
        data = path.read_bytes() if path.is_file() else b""
        digest.update(f"{name}\0{int(path.is_file())}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def resume_file(cell_dir: str | Path, world_size: int = 1) -> Path:
    """``CELL/models/resume-<fingerprint>.pt``: the checkpoint an interrupted run of these settings resumes from."""
    return Path(cell_dir) / "models" / f"resume-{resume_fingerprint(cell_dir, world_size)[:16]}.pt"


# ------------------------------------------------------------------------------ locks
def lock_cell(cell_dir: str | Path) -> int | None:
    """An open, exclusively locked ``CELL/.lock``, or None if another process holds it.

    ``run`` holds it while the cell trains (its processes inherit it), ``generate`` while it
    writes the cell, so neither changes a cell under the other. Close the descriptor to release.
    """
    fd = os.open(Path(cell_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd
