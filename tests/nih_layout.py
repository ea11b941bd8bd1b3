"""Small NIH ChestX-ray14 releases on disk, in each layout the real one comes in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,{sex},View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
FINDINGS = [
    "No Finding",
    "Mass",
    "Nodule|Mass",
    "Effusion",
    "Pleural_Thickening",
    "Hernia",
    "Cardiomegaly|Edema|Emphysema",
]


def write_release(
    root: Path,
    patients: int = 20,
    layout: str = "images",
    csv_name: str = "Data_Entry_2017.csv",
    sex_col: str = "Patient Gender",
    trailing_comma: bool = False,
    size: int = 48,
    seed: int = 0,
    official_lists: bool = True,
) -> list[dict]:
    """Write a tiny release; return its rows (image_id, patient, findings, view) in CSV order.

    layout: ``flat`` (images beside the CSV), ``images`` (``images/``) or ``nested``
    (``images_001/images/``, ``images_002/images/``, ... as the NIH download unpacks).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, lines = [], [HEADER.format(sex=sex_col) + ("," if trailing_comma else "")]
    for patient in range(1, patients + 1):
        for follow_up in range(int(rng.integers(1, 4))):
            image_id = f"{patient:08d}_{follow_up:03d}.png"
            findings = FINDINGS[len(rows) % len(FINDINGS)]
            view = "AP" if len(rows) % 3 == 0 else "PA"
            if layout == "flat":
                folder = root
            elif layout == "images":
                folder = root / "images"
            else:
                folder = root / f"images_{1 + len(rows) % 3:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / image_id)
            line = f"{image_id},{findings},{follow_up},{patient},50,F,{view},2500,2048,0.143,0.143"
            lines.append(line + ("," if trailing_comma else ""))
            rows.append({"image_id": image_id, "patient": patient, "findings": findings, "view": view})
    (root / csv_name).write_text("\n".join(lines) + "\n")
    if official_lists:
        test = [r["image_id"] for r in rows if r["patient"] % 5 == 0]
        (root / "test_list.txt").write_text("\n".join(test) + "\n")
        (root / "train_val_list.txt").write_text("\n".join(r["image_id"] for r in rows if r["patient"] % 5) + "\n")
    return rows
