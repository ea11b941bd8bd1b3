"""A generated bundle under the stock runner: from any directory, with MONAI's own bundle tools."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.grid.generate import GridSettings, generate

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`

HOSTILE = '$__import__("os").system("touch X")'


def test_hostile_label_cell_runs_from_another_directory_and_never_executes(tmp_path):
    study = make_hand_study(tmp_path / "study", {HOSTILE: lambda i: i % 2}, n_patients=12)
    (cell,) = generate(study, GridSettings(labels=[HOSTILE], resolutions=[16], **TINY_GRID))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(cell / "configs" / "train.json")], cwd=elsewhere, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("X"))  # the label was never evaluated
    assert not list(elsewhere.iterdir())  # nothing written relative to the working directory

    run = json.loads((cell / "run.json").read_text())
    assert run["label"] == HOSTILE and run["resolution"] == 16 and run["epochs"] == 2
    assert run["batch_size"] == 4 and run["images_per_s"] > 0 and run["peak_mem_mb"] > 0
    assert 0 <= run["best_val_auc"] <= 1 and 1 <= run["best_epoch"] <= 2
    assert run["best_val_auc_se"] == run["best_val_metrics"]["val_auc_se"] >= 0
    predictions = pd.read_csv(cell / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert list(predictions.columns) == ["image_id", "patient_id", "label", "score"]
    split = pd.read_csv(study / "data" / "split.csv", dtype=str)
    val = split[split["fold"] == "val"]
    assert predictions["image_id"].tolist() == val["image_id"].tolist()
    assert predictions["patient_id"].tolist() == val["patient_id"].tolist()
    assert predictions["score"].between(0, 1).all() and set(predictions["label"]) == {0, 1}
    assert (cell / "models" / "model.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cell / "logs"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train_loss", "lr", "val_auc", "val_auc_se"}

    # MONAI's bundle tools on the generated bundle (in-process: same code as the CLI)
    from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out

    # evaluate.json (an overlay of train.json) scores the saved checkpoint: predictions.csv is its output
    evaluate = ConfigWorkflow(config_file=[str(cell / "configs" / "train.json"), str(cell / "configs" / "evaluate.json")],
                              workflow_type="eval")
    evaluate.initialize()
    evaluate.run()
    rescored = pd.read_csv(cell / "eval" / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert rescored["image_id"].tolist() == predictions["image_id"].tolist()
    assert rescored["score"].to_numpy() == pytest.approx(predictions["score"].to_numpy(), abs=1e-5)

    configs = cell / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "train.json"), device="cpu")
    ckpt_export(net_id="network_def", filepath=str(cell / "models" / "model.ts"),
                ckpt_file=str(cell / "models" / "model.pt"), meta_file=str(configs / "metadata.json"),
                config_file=str(configs / "train.json"))
    assert (cell / "models" / "model.ts").stat().st_size > 0
