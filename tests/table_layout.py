"""A small ``--dataset csv`` table: PNG (8/16-bit, RGB), JPEG and NIfTI images, paths relative to it."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

KINDS = ("png8", "png16", "rgb", "nii", "nii3d", "jpg")


def base_image(i: int, side: int = 24) -> np.ndarray:
    """Image i as uint8, spanning 0-255 exactly, so every encoding below normalises back to it."""
    arr = np.random.default_rng(i).integers(0, 256, (side, side + 4 * (i % 2)), dtype=np.uint8)
    arr.flat[0], arr.flat[1] = 0, 255
    return arr


def write_image(path: Path, arr: np.ndarray, kind: str) -> None:
    """Write ``arr`` (rows x columns) as ``kind``; NIfTI holds it as (x, y), as ITK writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png8":
        Image.fromarray(arr).save(path)
    elif kind == "png16":
        Image.fromarray(arr.astype(np.uint16) * 257).save(path)  # 0-65535, min-max scales back to arr
    elif kind == "rgb":
        Image.fromarray(np.stack([arr] * 3, axis=-1)).save(path)
    elif kind == "jpg":
        Image.fromarray(np.stack([arr] * 3, axis=-1)).save(path, quality=95)
    elif kind == "nii":
        nib.save(nib.Nifti1Image(arr.T.astype(np.int16) * 4 - 100, np.eye(4)), path)
    elif kind == "nii3d":  # the middle of three slices is the image
        volume = np.stack([np.zeros_like(arr.T), arr.T, np.full_like(arr.T, 7)], axis=-1)
        nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
    else:
        raise ValueError(kind)


SUFFIX = {"png8": ".png", "png16": ".png", "rgb": ".png", "jpg": ".jpg", "nii": ".nii.gz", "nii3d": ".nii"}


def write_table(
    root: Path, patients: int = 10, per_patient: int = 2, labels=("Effusion", "Nodule"), table: str = "tables/study.csv"
) -> list[dict]:
    """Write images under ``root/images/`` and a table under ``root/tables/`` that points at them
    with relative paths (``../images/...``); return the rows as written."""
    rows = []
    for p in range(patients):
        for k in range(per_patient):
            i = len(rows)
            kind = KINDS[i % len(KINDS)]
            name = f"images/p{p:03d}/img{k}{SUFFIX[kind]}"
            write_image(root / name, base_image(i), kind)
            row = {"file": f"../{name}", "subject": f"S{p:03d}", "view": ("PA", "AP", "LL")[i % 3], "kind": kind}
            for j, label in enumerate(labels):
                row[label] = str((i + j) % 2)
            rows.append(row)
    columns = ["file", "subject", "view", *labels]
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    (root / table).parent.mkdir(parents=True, exist_ok=True)
    (root / table).write_text("\n".join(lines) + "\n")
    return rows
