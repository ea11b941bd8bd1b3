"""Synthetic study directories for the report tests: only the contract's files, no training.

Scores are ``y * signal + noise``: a higher ``signal`` means a higher AUC, so each cell's
AUC is known in advance to be monotone in its signal, and exactly computable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def cell_name(label, arch, resolution, seed) -> str:
    return f"{label.lower()}__{arch}__r{resolution}__s{seed}"


def write_cell(study: Path, label, arch, resolution, seed, y=None, score=None, ids=None,
               finished=True, run_extra=None) -> Path:
    folder = study / "bundles" / cell_name(label, arch, resolution, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(json.dumps(
        {"label": label, "arch": arch, "resolution": resolution, "seed": seed}))
    if not finished:
        return folder
    ids = ids if ids is not None else [f"img{i:04d}.png" for i in range(len(y))]
    pd.DataFrame({"image_id": ids, "patient_id": [f"p{i // 2}" for i in range(len(y))],
                  "label": np.asarray(y, int), "score": np.asarray(score, float)}) \
        .to_csv(folder / "predictions.csv", index=False)
    run = {"label": label, "arch": arch, "resolution": resolution, "seed": seed,
           "batch_size": max(2, 4096 // resolution), "epochs": 1,
           "train_seconds": resolution / 10.0, "images_per_s": 40000.0 / resolution,
           "peak_mem_mb": 100.0 + resolution ** 2 / 100.0, "best_val_auc": 0.0,
           "best_epoch": 1, "device": "cpu"}
    run.update(run_extra or {})
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def write_study_json(study: Path, labels, resolutions, archs, seeds, synthetic=True):
    study.mkdir(parents=True, exist_ok=True)
    (study / "study.json").write_text(json.dumps({
        "data": {"dataset": "nih", "split": "random", "val_fraction": 0.2, "seed": 0,
                 "view": "all", "resolutions": resolutions, "square": "pad"},
        "grid": {"labels": labels, "resolutions": resolutions, "archs": archs, "seeds": seeds,
                 "epochs": 1},
        "versions": {"monai-cxr": "0.1.0", "monai": "1.6.1"},
        "synthetic": synthetic}))


def make_study(study: Path, labels=("Mass", "Nodule"), resolutions=(32, 64, 128),
               archs=("resnet34",), seeds=(0,), n=120, prevalence=0.3, synthetic=True,
               signal=None, rng_seed=0):
    """A complete study: every cell finished, all cells of a label on the same val images.

    ``signal(label, arch, resolution)`` sets the separation (default: grows with resolution).
    Returns {(label, arch, resolution, seed): (y, score)}.
    """
    rng = np.random.default_rng(rng_seed)
    write_study_json(study, list(labels), list(resolutions), list(archs), list(seeds), synthetic)
    signal = signal or (lambda label, arch, r: np.log2(r) / 4.0)
    truth = {}
    for label in labels:
        y = (rng.random(n) < prevalence).astype(int)
        y[:2], y[2:4] = 1, 0  # at least two of each class
        for arch in archs:
            for seed in seeds:
                for r in resolutions:
                    score = 1 / (1 + np.exp(-(y * signal(label, arch, r) + rng.normal(0, 1, n))))
                    write_cell(study, label, arch, r, seed, y, score)
                    truth[(label, arch, r, seed)] = (y, score)
    return truth
