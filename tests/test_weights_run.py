"""Cells from pretrained files, of a user's network and of many labels, run by the stock runner up to the report."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_GRID, make_hand_study
from PIL import Image
from test_pretrained import _densenet, _resnet, _torchvision_names
from test_weights import TINY_NET

from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.report import make_report
from monai_cxr.run.executor import run_cells

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


def labels(unknown=()):
    """Mass: the bright square of make_hand_study; Nodule: another pattern, unknown (-1) for ``unknown`` images."""
    return {"Mass": lambda i: i % 2, "Nodule": lambda i: -1 if i in unknown else (i // 3) % 2}


def test_cells_start_from_imagenet_files_and_from_a_cell_and_record_what_loaded(tmp_path):
    study = make_hand_study(tmp_path / "study", labels(), n_patients=12, resolutions=(32,))
    files = {"resnet34": tmp_path / "resnet34-b627a593.pth", "densenet121": tmp_path / "densenet121-a639ec97.pth"}
    torch.save(_torchvision_names(_resnet(3, 1000).state_dict()), files["resnet34"])
    torch.save(_torchvision_names(_densenet(3, 1000).state_dict(), legacy=True), files["densenet121"])
    cells = generate(
        study,
        GridSettings(
            labels=["Mass"],
            resolutions=[32],
            archs=["resnet34", "densenet121"],
            pretrained={k: str(v) for k, v in files.items()},
            **TINY_GRID,
        ),
    )
    assert run_cells(study, jobs=1, progress=False).ok
    for cell in cells:
        run = json.loads((cell / "run.json").read_text())
        init, file = run["init"], files[run["arch"]]
        assert init == json.loads((cell / "models" / "init.json").read_text())
        assert init["source"] == str(file) and init["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert init["loaded"] / init["total"] >= 0.9 and len(init["skipped"]) == 2  # the fresh head
        assert init["normalization"]["folded_imagenet_stats"] is True
    summary = pd.read_csv(make_report(study, tensorboard=False) / "summary.csv")
    assert sorted(summary["init"]) == sorted(map(str, files.values()))

    # evaluate.json rescores the checkpoint without the start file (gone now) and leaves the record alone
    from monai.bundle import ConfigWorkflow

    resnet_cell = cells[0]
    record = (resnet_cell / "models" / "init.json").read_text()
    files["resnet34"].unlink()
    configs = [str(resnet_cell / "configs" / n) for n in ("train.json", "override.json", "evaluate.json")]
    evaluate = ConfigWorkflow(config_file=configs, workflow_type="eval", bundle_root=str(resnet_cell))
    evaluate.initialize()
    evaluate.run()
    assert (resnet_cell / "eval" / "predictions.csv").is_file()
    assert (resnet_cell / "models" / "init.json").read_text() == record

    # fine-tuning from that cell: every tensor loads, and its ImageNet normalisation carries over
    (tuned,) = generate(
        study,
        GridSettings(
            labels=["Nodule"],
            resolutions=[32],
            **TINY_GRID,
            pretrained={"resnet34": str(resnet_cell / "models" / "model.pt")},
        ),
    )
    assert run_cells(study, jobs=1, progress=False).ok
    init = json.loads((tuned / "run.json").read_text())["init"]
    assert init["loaded"] == init["total"] and init["skipped"] == [] and init["normalization"] is None
    assert json.loads((tuned / "configs" / "override.json").read_text())["normalize"] == "imagenet"


def test_a_users_network_and_a_multilabel_cell_run_under_the_stock_runner_and_reach_the_report(tmp_path, monkeypatch):
    study = make_hand_study(tmp_path / "study", labels(unknown=(5, 9)), n_patients=12)
    nets = tmp_path / "nets.json"
    nets.write_text(json.dumps({"tiny": TINY_NET}))
    cells = generate(
        study,
        GridSettings(
            labels=["Mass", "Nodule"],
            resolutions=[16],
            archs=["tiny"],
            arch_file=str(nets),
            task=["binary", "multilabel"],
            **TINY_GRID,
        ),
    )
    assert [c.name for c in cells] == ["mass__tiny__r16__s0", "nodule__tiny__r16__s0", "multilabel__tiny__r16__s0"]
    assert run_cells(study, jobs=1, progress=False).ok

    multi = cells[-1]
    run = json.loads((multi / "run.json").read_text())
    assert run["labels"] == ["Mass", "Nodule"] and run["best_val_auc_se"] is None
    per_label = [run["best_val_metrics"][f"val_auc/{j}"] for j in (0, 1)]
    assert run["best_val_auc"] == pytest.approx(sum(per_label) / 2)
    predictions = pd.read_csv(multi / "predictions.csv")
    assert predictions.columns.tolist() == ["image_id", "patient_id", "fold", "finding", "label", "score"]
    assert not (
        (predictions["image_id"].isin(["img0005.png", "img0009.png"])) & (predictions["finding"] == "Nodule")
    ).any()  # unknown for Nodule: no row

    out = make_report(study)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(zip(summary["label"], summary["task"], summary["arch"])) == [
        ("Mass", "binary", "tiny"),
        ("Mass", "multilabel", "tiny"),
        ("Nodule", "binary", "tiny"),
        ("Nodule", "multilabel", "tiny"),
    ]
    assert (out / "tensorboard" / "multilabel__tiny__r16__s0" / "mass").is_dir()
    assert json.loads((study / "study.json").read_text())["grid"]["networks"] == {"tiny": TINY_NET}

    # image files scored by the multi-label cell: one row per file and finding
    from monai_cxr.cell.inference import predict

    files = tmp_path / "files"
    files.mkdir()
    for n in range(2):
        Image.fromarray(np.load(study / "data" / "cache" / "r16.npy")[n]).save(files / f"{n}.png")
    predict(multi, [str(files)], str(tmp_path / "scores.csv"))
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores.columns.tolist() == ["image", "finding", "score"] and len(scores) == 4
    assert scores["finding"].tolist() == ["Mass", "Nodule", "Mass", "Nodule"]

    # MONAI's own check of the network's input and output, as a user runs it from the cell folder
    from monai.bundle import verify_net_in_out

    for cell in (cells[0], multi):
        monkeypatch.chdir(cell)
        verify_net_in_out(
            net_id="network_def",
            meta_file="configs/metadata.json",
            config_file=["configs/train.json", "configs/override.json"],
            device="cpu",
        )
