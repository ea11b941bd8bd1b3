"""Small MedMNIST ChestMNIST files: the released keys, shapes, dtypes and names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZES = {"train": 10, "val": 4, "test": 5}


def npz_name(side: int) -> str:
    return "chestmnist.npz" if side == 28 else f"chestmnist_{side}.npz"


def write_chestmnist(
    folder: Path, sides=(28, 64), sizes=None, seed: int = 0, compressed: bool = True, drop_key: str | None = None
) -> dict:
    """Write one file per side into ``folder``; return ``{key: array}`` of the largest file.

    Every file has the same labels (one release); each split has positives and negatives of
    every label. ``drop_key`` leaves one key out (a broken file).
    """
    sizes = sizes or SIZES
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for split, n in sizes.items():
        lab = rng.integers(0, 2, (n, 14), dtype=np.uint8)
        lab[0], lab[1] = 1, 0
        labels[split] = lab
    out = {}
    for side in sorted(sides):
        arrays = {}
        for split, n in sizes.items():
            arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
            arrays[f"{split}_labels"] = labels[split]
        if drop_key:
            arrays.pop(drop_key)
        (np.savez_compressed if compressed else np.savez)(folder / npz_name(side), **arrays)
        out = arrays
    return out
