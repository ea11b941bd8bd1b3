"""``STUDY/study.json``: the settings of every stage that has run, for reruns and reports."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_json

PACKAGES = ("monai-cxr", "monai", "torch", "pytorch-ignite", "numpy", "pandas", "scipy",
            "scikit-learn", "pillow", "nibabel")


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
