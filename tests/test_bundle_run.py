"""A generated bundle under the stock runner: from any directory, with MONAI's own bundle tools."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_GRID, make_hand_study
from PIL import Image

from monai_cxr.data.cache import open_cache
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.stats import delong

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`

HOSTILE = '$__import__("os").system("touch X")'
TEST_PATIENTS = ("pat002", "pat006")


def configs(cell, *names):
    return [str(cell / "configs" / name) for name in names]


def test_properties_of_monais_train_and_infer_workflows_are_all_there(tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12)
    (cell,) = generate(study, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    # train: the study's data; infer: the image files to score (inference/images by default)
    dataset_dirs = {"train": study / "data", "infer": cell / "inference" / "images"}
    monkeypatch.chdir(cell)  # bundle_root "." is the cell folder
    for files, kind in (("configs/train.json", "train"), ("configs/inference.json", "infer")):
        workflow = ConfigWorkflow(config_file=files, workflow_type=kind)
        workflow.initialize()
        assert workflow.check_properties() == [], files
        assert Path(os.path.abspath(workflow.dataset_dir)).resolve() == dataset_dirs[kind].resolve()
    monkeypatch.chdir(tmp_path)  # elsewhere, with the cell's values: bundle_root given
    for names, kind in ((["train.json", "override.json"], "train"), (["inference.json"], "infer")):
        workflow = ConfigWorkflow(config_file=configs(cell, *names), workflow_type=kind, bundle_root=str(cell))
        workflow.initialize()
        assert workflow.check_properties() == [], names
        assert Path(os.path.abspath(workflow.dataset_dir)).resolve() == dataset_dirs[kind].resolve()


def test_hostile_label_cell_runs_from_another_directory_and_never_executes(tmp_path):
    # images of the first label carry a bright square; the hostile one is trained, on other images
    study = make_hand_study(
        tmp_path / "study", {"Mass": lambda i: i % 2, HOSTILE: lambda i: (i // 3) % 2}, n_patients=12
    )
    split = pd.read_csv(study / "data" / "split.csv", dtype=str)
    split.loc[split["patient_id"].isin(TEST_PATIENTS), "fold"] = "test"
    split.to_csv(study / "data" / "split.csv", index=False)
    (cell,) = generate(study, GridSettings(labels=[HOSTILE], resolutions=[16], **TINY_GRID))
    (cell / "inputs.json").write_text(json.dumps({"datalist": "fingerprint"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # MONAI does not derive bundle_root from the config's location: outside the cell it is given
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--bundle_root",
            str(cell),
            "--log_every",
            "1",
            "--config_file",
            repr(configs(cell, "train.json", "override.json")),
        ],
        check=False,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("X"))  # the label was never evaluated
    assert not list(elsewhere.iterdir())  # nothing written relative to the working directory

    # the log: a plain line per `log_every` iterations, the epoch's mean loss and the val AUC, no carriage return
    assert "\r" not in proc.stdout + proc.stderr
    for line in (
        "epoch 1/2  iteration 1/2  loss ",
        "epoch 2/2  iteration 2/2  loss ",
        "epoch 2/2: train_loss ",
        "epoch 2/2: val_auc ",
    ):
        assert line in proc.stdout, line
    assert " img/s  ETA 0:00:" in proc.stdout and "(DeLong SE), best " in proc.stdout

    run = json.loads((cell / "run.json").read_text())
    assert run["label"] == HOSTILE and run["resolution"] == 16 and run["epochs"] == 2
    assert run["batch_size"] == 4 and run["images_per_s"] > 0 and run["peak_mem_mb"] > 0
    assert 0 <= run["best_val_auc"] <= 1 and 1 <= run["best_epoch"] <= 2
    assert run["best_val_auc_se"] == run["best_val_metrics"]["val_auc_se"] >= 0
    assert run["init"] == {"source": "scratch"} and run["resumed_from_epoch"] is None
    assert run["inputs"] == {"datalist": "fingerprint"} and run["torch_threads"] >= 1

    # the selected checkpoint's scores of every val image, then every test image
    predictions = pd.read_csv(cell / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert list(predictions.columns) == ["image_id", "patient_id", "fold", "label", "score"]
    datalist = json.loads((cell / "datalist.json").read_text())
    expected = [
        (d["image_id"], d["patient_id"], fold, d["label"][0])
        for key, fold in (("validation", "val"), ("test", "test"))
        for d in datalist[key]
    ]
    assert {d["patient_id"] for d in datalist["test"]} == set(TEST_PATIENTS)
    assert list(predictions[["image_id", "patient_id", "fold", "label"]].itertuples(index=False, name=None)) == expected
    assert predictions["score"].between(0, 1).all()
    val = predictions[predictions["fold"] == "val"]
    assert delong(val["label"].to_numpy(), val["score"].to_numpy()).auc[0] == pytest.approx(run["best_val_auc"])
    readme = (cell / "docs" / "README.md").read_text()
    assert f"Validation AUC **{run['best_val_auc']:.4f}** ± {run['best_val_auc_se']:.4f}" in readme
    assert "Not run yet" not in readme
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cell / "logs"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train_loss", "lr", "val_auc", "val_auc_se"}
    assert len(events.Scalars("train_loss")) == 2  # once per epoch, not per iteration

    # MONAI's bundle tools on the generated bundle (in-process: same code as the CLI)
    from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

    # evaluate.json (an overlay of train.json) rescores the saved checkpoint: the same AUC and predictions
    evaluate = ConfigWorkflow(
        config_file=configs(cell, "train.json", "override.json", "evaluate.json"),
        workflow_type="eval",
        bundle_root=str(cell),
    )
    evaluate.initialize()
    evaluate.run()
    rescored = pd.read_csv(cell / "eval" / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert rescored[["image_id", "fold"]].equals(predictions[["image_id", "fold"]])
    assert rescored["score"].to_numpy() == pytest.approx(predictions["score"].to_numpy(), abs=1e-5)
    metrics = dict(line.split(",") for line in (cell / "eval" / "metrics.csv").read_text().splitlines())
    assert float(metrics["val_auc"]) == pytest.approx(run["best_val_auc"])

    # inference.json (standing alone) scores the val images given as files as validation scored their cache rows
    # (this hand-made study has no source files: its 16 px cache rows, written as PNG, are the images)
    rows = pd.read_csv(study / "data" / "index.csv", dtype=str).reset_index().set_index("image_id")["index"]
    cache = open_cache(study / "data" / "cache", 16)
    files = tmp_path / "val files"
    files.mkdir()
    for n, image_id in enumerate(val["image_id"]):
        Image.fromarray(np.asarray(cache[int(rows[image_id])])).save(files / f"{n:03d}.png")
    infer = ConfigWorkflow(
        config_file=str(cell / "configs" / "inference.json"),
        workflow_type="infer",
        bundle_root=str(cell),
        dataset_dir=str(files),
    )
    infer.initialize()
    infer.run()
    inferred = pd.read_csv(cell / "inference" / "scores.csv").sort_values("image")
    assert inferred["score"].to_numpy() == pytest.approx(val["score"].to_numpy(), abs=1e-5)

    train = configs(cell, "train.json", "override.json")
    verify_net_in_out(
        net_id="network_def", meta_file=str(cell / "configs" / "metadata.json"), config_file=train, device="cpu"
    )
    ckpt_export(
        net_id="network_def",
        filepath=str(cell / "models" / "model.ts"),
        ckpt_file=str(cell / "models" / "model.pt"),
        meta_file=str(cell / "configs" / "metadata.json"),
        config_file=train,
    )
    assert (cell / "models" / "model.ts").stat().st_size > 0
