"""Shared fixtures: a tiny study made by the real stages (phantom -> prepare), and hand-made ones.

The tiny study is session-scoped: synthesising and preparing it once keeps the suite fast.
Tests that change a study copy it first (``study_copy``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest

# Subprocesses started by the tests (bundle runs) use one thread each: the machine is shared.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_RESOLUTIONS = [16, 32]
# Tiny training settings: a cell runs in seconds.
TINY_GRID = dict(epochs=2, batch_size=4, subsample=8, learning_rate=1e-3)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A prepared study of a small phantom: ~24 patients at 64 px (train / val / test), cached at 16 and 32 px."""
    from monai_cxr.data.phantom import synthesize
    from monai_cxr.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny")
    synthesize(root / "phantom", patients=24, size=64, seed=0, prevalence=0.4, workers=1)
    # val as large as in the paper's 80/20 (the same val patients), and a held-out test fold
    prepare(
        dataset="nih",
        data_dir=root / "phantom",
        study_dir=root / "study",
        resolutions=TINY_RESOLUTIONS,
        seed=0,
        workers=1,
        progress=False,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    return root / "study"


@pytest.fixture
def study_copy(tiny_study, tmp_path):
    """A private copy of the tiny study (data only), for tests that generate or run in it."""
    dest = tmp_path / "study"
    shutil.copytree(tiny_study, dest, ignore=shutil.ignore_patterns("bundles", "report"))
    return dest


def make_hand_study(
    study_dir, labels: dict, n_patients: int = 16, per_patient: int = 2, resolutions=(16,), seed: int = 0
):
    """A study written by hand per docs/study-layout.md, for labels the phantom cannot make.

    ``labels`` maps each label column name to the 0/1 values of its images (a callable of the
    row number, or None for a random 50 % label). Images of positives carry a bright square.
    """
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    index = pd.DataFrame(
        {
            "image_id": [f"img{i:04d}.png" for i in range(n)],
            "patient_id": [f"pat{i // per_patient:03d}" for i in range(n)],
            "view": "PA",
            "path": [f"/nonexistent/img{i:04d}.png" for i in range(n)],
        }
    )
    for name, rule in labels.items():
        index[name] = [int(rule(i)) if rule else int(rng.random() < 0.5) for i in range(n)]
    val_patients = {f"pat{p:03d}" for p in range(0, n_patients, 4)}
    split = index[["image_id", "patient_id"]].assign(
        fold=["val" if p in val_patients else "train" for p in index["patient_id"]]
    )
    data = study_dir / "data"
    (data / "cache").mkdir(parents=True, exist_ok=True)
    index.to_csv(data / "index.csv", index=False)
    split.to_csv(data / "split.csv", index=False)
    first = index[list(labels)[0]].to_numpy() == 1
    for r in resolutions:
        images = rng.integers(0, 80, size=(n, r, r), dtype=np.uint8)
        images[first, r // 4 : r // 2, r // 4 : r // 2] = 220
        np.save(data / "cache" / f"r{r}.npy", images)
    (data / "cache" / "manifest.json").write_text(json.dumps({"complete": list(resolutions)}))
    (study_dir / "study.json").write_text(json.dumps({"data": {"dataset": "hand"}, "synthetic": True}))
    return study_dir


@pytest.fixture
def log_lines():
    """The messages the package logs during a test, as a list of strings (INFO and above)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("monai_cxr")
    handler, level = Collect(level=logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
