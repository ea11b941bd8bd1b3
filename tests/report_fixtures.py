"""Synthetic study directories for the report tests: only the contract's files, no training.

A study has ``study.json`` (with the grid's cell names), ``data/index.csv`` and
``data/split.csv`` (train, val and test folds by patient), and per cell ``cell.json``,
``predictions.csv`` (val and test rows: ``image_id, patient_id, fold, label, score``) and
``run.json``.

Scores are ``sigmoid(y * signal + shared * case + noise * e)``: ``signal(label, arch,
resolution)`` separates the classes, ``case`` is one draw per image that every cell of a label
shares (models agree on which images are hard: comparisons become precise), and ``e`` is each
cell's own noise. A higher signal means a higher AUC, so each cell's AUC is known in advance
to be monotone in its signal, and exactly computable from the returned predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.grid.cells import Cell


def cell_name(label, arch, resolution, seed) -> str:
    return Cell(label, arch, int(resolution), int(seed)).name


def write_data(study: Path, images: pd.DataFrame) -> None:
    """``images``: image_id, patient_id, fold, then one 0/1/-1 column per label."""
    data = study / "data"
    data.mkdir(parents=True, exist_ok=True)
    labels = [c for c in images.columns if c not in ("image_id", "patient_id", "fold")]
    index = images[["image_id", "patient_id"]].assign(view="PA", path=[f"/x/{i}" for i in images["image_id"]])
    pd.concat([index, images[labels]], axis=1).to_csv(data / "index.csv", index=False)
    images[["image_id", "patient_id", "fold"]].to_csv(data / "split.csv", index=False)


def write_cell(
    study: Path, label, arch, resolution, seed, predictions=None, finished=True, run_extra=None, fold_column=True
) -> Path:
    folder = study / "bundles" / cell_name(label, arch, resolution, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").write_text(
        json.dumps({"label": label, "arch": arch, "resolution": resolution, "seed": seed})
    )
    if not finished:
        return folder
    frame = predictions if fold_column else predictions.drop(columns="fold")
    frame.to_csv(folder / "predictions.csv", index=False)
    run = {
        "label": label,
        "arch": arch,
        "resolution": resolution,
        "seed": seed,
        "batch_size": max(2, 4096 // resolution),
        "epochs": 1,
        "train_seconds": resolution / 10.0,
        "images_per_s": 40000.0 / resolution,
        "peak_mem_mb": 100.0 + resolution**2 / 100.0,
        "best_val_auc": 0.0,
        "best_epoch": 1,
        "device": "cpu",
        "torch_threads": 1 + seed % 2,
        "learning_rate": 1e-3,
        "init": {"source": "scratch"},
    }
    run.update(run_extra or {})
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def write_study_json(study: Path, labels, resolutions, archs, seeds, synthetic=True, cells=None):
    """``cells``: the grid's cell names; default every (label, arch, resolution, seed)."""
    study.mkdir(parents=True, exist_ok=True)
    if cells is None:
        cells = [cell_name(lb, a, r, s) for lb in labels for a in archs for r in sorted(resolutions) for s in seeds]
    (study / "study.json").write_text(
        json.dumps(
            {
                "data": {
                    "dataset": "nih",
                    "split": "random",
                    "val_fraction": 0.2,
                    "test_fraction": 0.2,
                    "seed": 0,
                    "view": "all",
                    "resolutions": list(resolutions),
                    "square": "pad",
                },
                "grid": {
                    "labels": list(labels),
                    "resolutions": list(resolutions),
                    "archs": list(archs),
                    "seeds": list(seeds),
                    "epochs": 1,
                    "learning_rate": 1e-3,
                    "cells": list(cells),
                },
                "versions": {"monai-cxr": "0.1.0", "monai": "1.6.1"},
                "synthetic": synthetic,
            }
        )
    )


def make_images(labels, n_train=20, n_val=60, n_test=90, prevalence=0.3, unknown=0.0, rng=None) -> pd.DataFrame:
    """Images of every fold, two per patient, with at least two of each class per label in val and test."""
    rng = rng if rng is not None else np.random.default_rng(0)
    rows = []
    for fold, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows += [{"image_id": f"{fold}{i:04d}.png", "patient_id": f"{fold}-p{i // 2}", "fold": fold} for i in range(n)]
    images = pd.DataFrame(rows, columns=["image_id", "patient_id", "fold"])
    for label in labels:
        y = (rng.random(len(images)) < prevalence).astype(int)
        for fold in ("val", "test"):
            idx = np.flatnonzero(images["fold"] == fold)
            if len(idx) >= 4:
                y[idx[:2]], y[idx[2:4]] = 1, 0
            if unknown and len(idx) > 4:  # -1: this image is not scored for this label
                y[idx[4:][rng.random(len(idx) - 4) < unknown]] = -1
        images[label] = y
    return images


def make_study(
    study: Path,
    labels=("Mass", "Nodule"),
    resolutions=(32, 64, 128),
    archs=("resnet34",),
    seeds=(0,),
    n_train=20,
    n_val=60,
    n_test=90,
    prevalence=0.3,
    synthetic=True,
    signal=None,
    shared=0.0,
    noise=1.0,
    unknown=0.0,
    rng_seed=0,
):
    """A complete study: every grid cell finished, all cells of a label on the same val and test images.

    ``signal(label, arch, resolution)`` sets the separation (default: grows with resolution);
    ``n_test=0`` makes a study without a test fold. Returns
    ``{(label, arch, resolution, seed): predictions DataFrame}``.
    """
    rng = np.random.default_rng(rng_seed)
    write_study_json(study, list(labels), list(resolutions), list(archs), list(seeds), synthetic)
    images = make_images(labels, n_train, n_val, n_test, prevalence, unknown, rng)
    write_data(study, images)
    signal = signal or (lambda label, arch, r: np.log2(r) / 4.0)
    truth = {}
    for label in labels:
        rows = images[images["fold"].isin(["val", "test"]) & (images[label] >= 0)]
        y = rows[label].to_numpy()
        case = rng.normal(0, 1, len(rows))
        for arch in archs:
            for seed in seeds:
                for r in resolutions:
                    z = y * signal(label, arch, r) + shared * case + noise * rng.normal(0, 1, len(rows))
                    pred = pd.DataFrame(
                        {
                            "image_id": rows["image_id"].to_numpy(),
                            "patient_id": rows["patient_id"].to_numpy(),
                            "fold": rows["fold"].to_numpy(),
                            "label": y,
                            "score": 1 / (1 + np.exp(-z)),
                        }
                    )
                    write_cell(study, label, arch, r, seed, pred)
                    truth[(label, arch, r, seed)] = pred
    return truth


def scored(pred: pd.DataFrame, fold: str = "test"):
    """(y, score) of one fold of a cell's predictions, in image_id order (the report's order)."""
    rows = pred[pred["fold"] == fold].sort_values("image_id")
    return rows["label"].to_numpy(), rows["score"].to_numpy()
