"""Small CheXpert releases on disk, laid out as CheXpert-v1.0-small unpacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from monai_cxr.data.sources.chexpert import LABELS

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELS]
CELLS = ("1.0", "", "0.0", "-1.0")  # positive, unmentioned, negative, uncertain

# A hand-checked table (train.csv): (path below train/, Frontal/Lateral, AP/PA, non-blank cells).
HAND_ROWS = [
    ("patient00001/study1/view1_frontal.jpg", "Frontal", "AP", {"Edema": "-1.0", "Cardiomegaly": "1.0"}),
    ("patient00001/study1/view2_lateral.jpg", "Lateral", "", {"Edema": "-1.0"}),
    ("patient00002/study1/view1_frontal.jpg", "Frontal", "PA", {"Edema": "0.0", "Pleural Effusion": "-1.0"}),
    ("patient00003/study1/view1_frontal.jpg", "Frontal", "AP", {"Edema": "1.0", "Pleural Effusion": "-1.0"}),
    ("patient00003/study2/view1_frontal.jpg", "Frontal", "", {"Edema": "-1.0", "Pleural Effusion": "1.0"}),
    ("patient00004/study1/view1_frontal.jpg", "Frontal", "PA", {"No Finding": "1.0"}),
]


def generated_rows(patients: int, first: int = 1, valid: bool = False) -> list[tuple]:
    """Rows for ``patients`` patients: 1-2 studies, a frontal and (every other study) a lateral.

    Train cells cycle through 1.0, blank, 0.0, -1.0; valid.csv holds only 1.0 and 0.0, as released.
    """
    rows = []
    for p in range(first, first + patients):
        for study in range(1, 2 + p % 2):
            views = [("view1_frontal.jpg", "Frontal", ("AP", "PA")[len(rows) % 2])]
            if (p + study) % 2:
                views.append(("view2_lateral.jpg", "Lateral", ""))
            for name, kind, ap_pa in views:
                cells = {}
                for j, label in enumerate(LABELS):
                    k = len(rows) + 3 * j
                    cells[label] = ("1.0", "0.0")[k % 2] if valid else CELLS[k % 4]
                rows.append((f"patient{p:05d}/study{study}/{name}", kind, ap_pa, cells))
    return rows


def _csv(rows, part: str, folder: str) -> str:
    lines = [",".join(HEADER)]
    for path, kind, ap_pa, cells in rows:
        values = [cells.get(label, "") for label in LABELS]
        lines.append(",".join([f"{folder}/{part}/{path}", "Female", "60", kind, ap_pa, *values]))
    return "\n".join(lines) + "\n"


def write_chexpert(
    root: Path, train_rows=None, valid_rows=None, folder: str = "CheXpert-v1.0-small", seed: int = 0
) -> Path:
    """Write ``root/folder/{train,valid}.csv`` and their JPEGs (non-square, as released); return the folder.

    ``valid_rows=[]`` writes no valid.csv.
    """
    rng = np.random.default_rng(seed)
    train_rows = generated_rows(12) if train_rows is None else train_rows
    valid_rows = generated_rows(3, first=64541, valid=True) if valid_rows is None else valid_rows
    release = root / folder
    release.mkdir(parents=True, exist_ok=True)
    for part, rows in (("train", train_rows), ("valid", valid_rows)):
        if part == "valid" and not rows:
            continue
        (release / f"{part}.csv").write_text(_csv(rows, part, folder))
        for i, (path, *_rest) in enumerate(rows):
            file = release / part / path
            file.parent.mkdir(parents=True, exist_ok=True)
            shape = (32, 36 + 4 * (i % 3)) if i % 2 else (40 + 2 * (i % 3), 32)  # landscape and portrait
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(file, quality=95)
    return release
