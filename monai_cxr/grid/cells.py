"""The grid of a study: its cells, their names, and checks of the grid against the data."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from monai_cxr.errors import CxrError

__all__ = ["Cell", "cells", "label_slug", "read_cell"]


def label_slug(label: str) -> str:
    """A file-name-safe form of a label: ``Pleural_Thickening`` -> ``pleural-thickening``.

    A label with other characters than letters, digits, ``_``, ``-`` and spaces also gets a
    short hash of its exact text, so two labels never share a folder.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40].strip("-") or "label"
    if not re.fullmatch(r"[A-Za-z0-9_\- ]+", label):
        slug += "-" + hashlib.sha1(label.encode("utf-8")).hexdigest()[:8]
    return slug


@dataclass(frozen=True)
class Cell:
    """One bundle of the study: a label (or, multi-label, all ``labels``), an architecture, a resolution and a seed."""

    label: str
    arch: str
    resolution: int
    seed: int
    labels: tuple[str, ...] = ()  # a multi-label cell's findings, in output order; empty for a binary cell

    @property
    def task(self) -> str:
        return "multilabel" if self.labels else "binary"

    @property
    def name(self) -> str:
        """``{label-slug}__{arch}__r{R}__s{seed}``, or ``multilabel__{arch}__r{R}__s{seed}`` (docs/study-layout.md)."""
        head = "multilabel" if self.labels else label_slug(self.label)
        return f"{head}__{self.arch}__r{self.resolution}__s{self.seed}"

    def as_dict(self) -> dict:
        """``cell.json``: a binary cell's label, or a multi-label cell's ``task`` and ``labels``; then the rest."""
        head = {"task": "multilabel", "labels": list(self.labels)} if self.labels else {"label": self.label}
        return {**head, "arch": self.arch, "resolution": self.resolution, "seed": self.seed}


def read_cell(folder) -> Cell:
    """The cell a bundle folder holds, from its ``cell.json`` (the inverse of :meth:`Cell.as_dict`), checked."""
    path = Path(folder) / "cell.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CxrError(f"cannot read {path}: {exc}") from None
    if not isinstance(info, dict):
        raise CxrError(f"{path} must hold a JSON object, not {type(info).__name__}")
    multilabel = info.get("task") == "multilabel"
    absent = [k for k in ("labels" if multilabel else "label", "arch", "resolution", "seed") if k not in info]
    if absent:
        raise CxrError(f"{path} lacks {', '.join(absent)}")
    try:
        resolution, seed = int(info["resolution"]), int(info["seed"])
    except (TypeError, ValueError):
        raise CxrError(
            f"{path}: resolution and seed must be integers, got {info['resolution']!r} and {info['seed']!r}"
        ) from None
    if multilabel and (not isinstance(info["labels"], list) or not info["labels"]):
        raise CxrError(f"{path}: labels must be a non-empty list, got {info['labels']!r}")
    labels = tuple(str(x) for x in info["labels"]) if multilabel else ()
    return Cell("" if multilabel else str(info["label"]), str(info["arch"]), resolution, seed, labels)


def cells(labels, resolutions, archs, seeds, task=("binary",)) -> list[Cell]:
    """All cells of the grid: binary ones label-major, then multi-label ones; refuses colliding label folders."""
    out = (
        [
            Cell(label, arch, int(r), int(s))
            for label, arch, r, s in itertools.product(labels, archs, sorted(resolutions), seeds)
        ]
        if "binary" in task
        else []
    )
    if "multilabel" in task:
        out += [
            Cell("", arch, int(r), int(s), tuple(labels))
            for arch, r, s in itertools.product(archs, sorted(resolutions), seeds)
        ]
    slugs: dict[str, str] = {}
    for label in labels:
        other = slugs.setdefault(label_slug(label), label)
        if other != label:
            raise CxrError(f"labels {other!r} and {label!r} would share the folder name {label_slug(label)!r}")
    if "multilabel" in slugs and len(task) > 1:
        raise CxrError(
            f"label {slugs['multilabel']!r} would share its folders with the multi-label cells; "
            f"run the two tasks in separate studies"
        )
    return out
