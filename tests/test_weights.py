"""Pretrained starts, user networks and multi-label cells, up to the bundle's files (no training here).

The torchvision-format files are made here from MONAI networks with torchvision's names (as in
``test_pretrained.py``): nothing is downloaded.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_GRID, make_hand_study
from ignite.engine import Engine
from report_fixtures import cell_name, make_study, write_study_json
from sklearn.metrics import roc_auc_score
from test_pretrained import _densenet, _resnet, _torchvision_names

from monai_cxr.cell.batches import DevicePreprocess
from monai_cxr.cell.datalist import build_multilabel
from monai_cxr.cell.handlers import PredictionSaver
from monai_cxr.cell.inference import NormalizeRadiographd
from monai_cxr.cell.losses import MaskedBCEWithLogitsLoss
from monai_cxr.cell.sampling import SubsampleSampler
from monai_cxr.cli import main
from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.grid.settings import pretrained_map
from monai_cxr.pipeline import describe, plan_study
from monai_cxr.report import make_report

torch.set_num_threads(1)

# a small user network: a MONAI DenseNet with two dense blocks (it takes 8 px and up; with four, 32 px)
TINY_NET = {
    "_target_": "DenseNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [2, 2],
    "bn_size": 2,
}


def settings(**kw):
    return GridSettings(**{"labels": ["Mass"], "resolutions": [16], **TINY_GRID, **kw})


def imagenet_file(path, make, legacy=False):
    torch.save(_torchvision_names(make(3, 1000).state_dict(), legacy), path)
    return path


def override(cell):
    return json.loads((cell / "configs" / "override.json").read_text())


# ------------------------------------------------------------------ --pretrained ARCH=PATH
def test_pretrained_pairs_parse_and_refuse_in_one_line():
    assert pretrained_map("resnet34=/w/a,b.pth,densenet121=/w/c.pth", ["resnet34", "densenet121"]) == {
        "resnet34": "/w/a,b.pth",
        "densenet121": "/w/c.pth",
    }
    assert pretrained_map("/w/r.pth", ["resnet34"]) == {"resnet34": "/w/r.pth"}  # the old --initial-weights
    for value, archs, message in (
        ("/w/r.pth", ["resnet34", "densenet121"], "name no architecture"),
        ("resnet34=/a,resnet34=/b", ["resnet34"], "given twice"),
        ("resnet34=", ["resnet34"], "is not ARCH=PATH"),
    ):
        with pytest.raises(CxrError, match=message):
            pretrained_map(value, archs)


@pytest.mark.parametrize("legacy", [False, True], ids=["densenet-current-names", "densenet-legacy-names"])
def test_imagenet_files_are_checked_at_generate_and_set_the_fixed_normalisation(tmp_path, legacy):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2}, resolutions=(32,))
    files = {
        "resnet34": imagenet_file(tmp_path / "resnet34-b627a593.pth", _resnet),
        "densenet121": imagenet_file(tmp_path / "densenet121-a639ec97.pth", _densenet, legacy),
    }
    cells = generate(
        study,
        settings(resolutions=[32], archs=["resnet34", "densenet121"], pretrained={k: str(v) for k, v in files.items()}),
    )
    for cell in cells:
        values = override(cell)
        arch = values["arch"]
        assert values["pretrained"] == str(files[arch]) and values["normalize"] == "imagenet"
        assert re.fullmatch("[0-9a-f]{64}", values["pretrained_sha256"])
        inference = json.loads((cell / "configs" / "inference.json").read_text())
        assert inference["normalize"] == "imagenet"  # predict feeds files as training did
        meta = json.loads((cell / "configs" / "metadata.json").read_text())
        assert "ImageNet" in meta["description"] and "0.449" in meta["image_classes"]
    grid = json.loads((study / "study.json").read_text())["grid"]
    assert grid["pretrained"] == {k: str(v) for k, v in files.items()}


def test_another_architectures_file_a_missing_one_or_one_for_no_grid_arch_is_refused(tmp_path, capsys):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2})
    densenet = imagenet_file(tmp_path / "densenet121-a639ec97.pth", _densenet)
    cases = [
        (
            ["--pretrained", f"resnet34={densenet}"],
            rf"pretrained weights file {re.escape(str(densenet))} matches \d+ of the network's \d+ backbone tensors"
            r".*first mismatches: conv1",
        ),
        (["--pretrained", f"resnet34={tmp_path / 'absent.pth'}"], "absent.pth for resnet34 not found"),
        (
            ["--pretrained", f"densenet121={densenet}"],
            "pretrained weights for 'densenet121', which is not an architecture of the grid",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["generate", "--study-dir", str(study), "--labels", "Mass", "--resolutions", "16", *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not (study / "bundles").exists()  # refused before any cell was written


def test_old_initial_weights_option_is_the_pretrained_file_of_a_one_arch_grid(tmp_path, capsys):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2})
    resnet = imagenet_file(tmp_path / "r.pth", _resnet)
    main(
        [
            "generate",
            "--study-dir",
            str(study),
            "--labels",
            "Mass",
            "--resolutions",
            "16",
            "--initial-weights",
            str(resnet),
        ]
    )
    (cell,) = (study / "bundles").iterdir()
    assert override(cell)["pretrained"] == str(resnet)


def test_a_cell_of_the_study_is_named_relative_to_the_cell_and_keeps_its_normalisation(tmp_path):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2, "Nodule": lambda i: (i // 3) % 2})
    resnet = imagenet_file(tmp_path / "r.pth", _resnet)
    (source,) = generate(study, settings(pretrained={"resnet34": str(resnet)}))
    (source / "models").mkdir()
    torch.save({"model": _resnet().state_dict()}, source / "models" / "model.pt")  # as CheckpointSaver saves it
    (cell,) = generate(study, settings(labels=["Nodule"], pretrained={"resnet34": str(source / "models/model.pt")}))
    values = override(cell)
    assert values["pretrained"] == f"../../bundles/{source.name}/models/model.pt"
    assert values["normalize"] == "imagenet"  # the source cell was trained on ImageNet-normalised inputs
    assert (cell / values["pretrained"]).resolve() == (source / "models/model.pt").resolve()


# ------------------------------------------------------------------ normalisation
def test_both_data_paths_normalise_alike_and_refuse_other_choices():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    for normalize in ("image", "imagenet"):
        batch, _ = DevicePreprocess(normalize=normalize)({"image": images})
        per_sample = [
            NormalizeRadiographd("image", normalize)({"image": img.numpy().astype(np.float32)})["image"]
            for img in images
        ]
        np.testing.assert_allclose(batch.numpy(), np.stack(per_sample), atol=1e-6)
    fixed, _ = DevicePreprocess(normalize="imagenet")({"image": images})
    np.testing.assert_allclose(fixed.numpy(), (images.numpy() / 255 - 0.449) / 0.226, atol=1e-5)
    with pytest.raises(CxrError, match="normalize 'z' is not one of image, imagenet"):
        DevicePreprocess(normalize="z")


# ------------------------------------------------------------------ user networks
def test_arch_file_networks_are_checked_on_the_network_and_recorded(tmp_path, capsys):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2}, resolutions=(16,))
    nets = tmp_path / "nets.json"
    nets.write_text(json.dumps({"tiny": TINY_NET, "deep": {**TINY_NET, "block_config": [2, 2, 2, 2]}}))
    (cell,) = generate(study, settings(archs=["tiny"], arch_file=str(nets)))
    assert cell.name == "mass__tiny__r16__s0" and override(cell)["network_def"] == TINY_NET
    assert json.loads((study / "study.json").read_text())["grid"]["networks"] == {"tiny": TINY_NET}
    for extra, message in (
        (["--archs", "deep"], "resolution 16 is below the 32 px that deep accepts"),
        (["--archs", "tiny2"], "architecture 'tiny2' is not one of resnet34, densenet121, tiny"),
    ):
        with pytest.raises(SystemExit):
            main(
                [
                    "generate",
                    "--study-dir",
                    str(study),
                    "--labels",
                    "Mass",
                    "--resolutions",
                    "16",
                    "--arch-file",
                    str(nets),
                    *extra,
                ]
            )
        assert message in capsys.readouterr().err
    nets.write_text(json.dumps({"resnet34": TINY_NET}))
    with pytest.raises(CxrError, match="name 'resnet34' is built in"):
        generate(study, settings(archs=["resnet34"], arch_file=str(nets)))


# ------------------------------------------------------------------ multi-label pieces
def test_multilabel_cells_datalist_and_network_outputs(tmp_path):
    unknown = {"Mass": lambda i: i % 2, "Nodule": lambda i: -1 if i in (1, 5) else (i // 3) % 2}
    study = make_hand_study(tmp_path / "s", unknown)
    cells = generate(study, settings(labels=["Mass", "Nodule"], task=["binary", "multilabel"], seeds=[0, 1]))
    names = [c.name for c in cells]
    assert names == [
        "mass__resnet34__r16__s0",
        "mass__resnet34__r16__s1",
        "nodule__resnet34__r16__s0",
        "nodule__resnet34__r16__s1",
        "multilabel__resnet34__r16__s0",
        "multilabel__resnet34__r16__s1",
    ]
    cell = cells[-1]
    assert json.loads((cell / "cell.json").read_text()) == {
        "task": "multilabel",
        "labels": ["Mass", "Nodule"],
        "arch": "resnet34",
        "resolution": 16,
        "seed": 1,
    }
    assert override(cell)["network_def"]["num_classes"] == 2
    meta = json.loads((cell / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 2
    datalist = json.loads((cell / "datalist.json").read_text())
    assert datalist["label_names"] == ["Mass", "Nodule"]
    entry = next(d for d in datalist["training"] + datalist["validation"] if d["image"] == 5)
    assert entry["label"] == [1, -1]  # unknown for Nodule: kept, masked for that label only
    nodule = json.loads((study / "bundles" / "nodule__resnet34__r16__s0" / "datalist.json").read_text())
    assert 5 not in [d["image"] for d in nodule["training"] + nodule["validation"]]


def test_build_multilabel_keeps_images_known_for_some_label():
    index = pd.DataFrame({"image_id": list("abc"), "patient_id": list("xyz"), "A": [1, -1, -1], "B": [0, 1, -1]})
    split = pd.DataFrame({"image_id": list("abc"), "fold": ["train", "val", "train"]})
    out = build_multilabel(index, split, ["A", "B"])
    assert [d["label"] for d in out["training"]] == [[1, 0]] and [d["label"] for d in out["validation"]] == [[-1, 1]]


def test_masked_loss_is_bce_over_the_known_targets():
    logits = torch.randn(6, 3)
    target = torch.tensor([[1, 0, -1], [0, -1, 1], [1, 1, 0], [-1, -1, -1], [0, 0, 0], [1, -1, 0]]).float()
    known = target >= 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target[known])
    assert torch.allclose(MaskedBCEWithLogitsLoss()(logits, target), expected)
    binary = torch.randint(0, 2, (6, 1)).float()
    assert torch.allclose(
        MaskedBCEWithLogitsLoss()(logits[:, :1], binary), torch.nn.BCEWithLogitsLoss()(logits[:, :1], binary)
    )


def test_multilabel_sampler_gives_each_rarest_label_and_no_finding_an_equal_share():
    # label 0 is common (40), label 1 rare (6); images positive for both count for the rare label
    labels = np.zeros((100, 2), int)
    labels[:40, 0] = 1
    labels[36:42, 1] = 1
    labels[90:, 1] = -1  # unknown: not positive
    epoch = SubsampleSampler(labels, num_samples=60, seed=0).draw(0)
    groups = [
        np.isin(epoch, np.arange(36)).sum(),
        np.isin(epoch, np.arange(36, 42)).sum(),
        np.isin(epoch, np.arange(42, 100)).sum(),
    ]
    assert groups == [20, 20, 20]
    # one label: exactly the binary draw (half positive, half negative), as before
    binary = np.array([1] * 10 + [0] * 90)
    rng = np.random.default_rng([3, 0])
    expected = rng.permutation(
        np.concatenate([rng.choice(np.arange(10), 20, replace=True), rng.choice(np.arange(10, 100), 21, replace=False)])
    )
    assert SubsampleSampler(binary, 41, seed=3).draw(0).tolist() == expected.tolist()
    assert SubsampleSampler(binary[:, None], 41, seed=3).draw(0).tolist() == expected.tolist()


def test_prediction_saver_writes_one_row_per_known_image_and_finding(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"label_names": ["Mass", "Nodule"]}))
    saver = PredictionSaver(str(tmp_path / "p.csv"), datalist_file=str(datalist))
    engine = Engine(lambda e, batch: {"pred": batch["pred"], "label": batch["label"]})
    saver.attach(engine)
    batch = {
        "image_id": ["a", "b"],
        "patient_id": ["p", "q"],
        "fold": ["val", "test"],
        "pred": torch.tensor([[0.1, 0.2], [0.3, 0.4]]),
        "label": torch.tensor([[1.0, -1.0], [0.0, 1.0]]),
    }
    engine.run([batch], max_epochs=1)
    frame = pd.read_csv(tmp_path / "p.csv")
    assert list(frame.columns) == ["image_id", "patient_id", "fold", "finding", "label", "score"]
    assert frame[["image_id", "finding", "label"]].values.tolist() == [
        ["a", "Mass", 1],
        ["b", "Mass", 0],
        ["b", "Nodule", 1],
    ]
    assert frame["score"].tolist() == pytest.approx([0.1, 0.3, 0.4])


# ------------------------------------------------------------------ the report, side by side
def test_report_puts_multilabel_findings_beside_binary_cells(tmp_path):
    study = tmp_path / "study"
    truth = make_study(study, labels=("Mass", "Nodule"), resolutions=(32, 64), unknown=0.1)
    names = [cell_name(lb, "resnet34", r, 0) for lb in ("Mass", "Nodule") for r in (32, 64)]
    rng = np.random.default_rng(1)
    for r in (32, 64):  # the multi-label cell: each finding's rows, shuffled scores of the binary cell's images
        folder = study / "bundles" / f"multilabel__resnet34__r{r}__s0"
        folder.mkdir(parents=True)
        (folder / "cell.json").write_text(
            json.dumps(
                {"task": "multilabel", "labels": ["Mass", "Nodule"], "arch": "resnet34", "resolution": r, "seed": 0}
            )
        )
        rows = [
            truth[(lb, "resnet34", r, 0)].assign(finding=lb, score=lambda f: rng.random(len(f)))
            for lb in ("Mass", "Nodule")
        ]
        pd.concat(rows)[["image_id", "patient_id", "fold", "finding", "label", "score"]].to_csv(
            folder / "predictions.csv", index=False
        )
        (folder / "run.json").write_text(
            json.dumps(
                {"task": "multilabel", "arch": "resnet34", "resolution": r, "seed": 0, "init": {"source": "scratch"}}
            )
        )
        names.append(folder.name)
    write_study_json(study, ["Mass", "Nodule"], [32, 64], ["resnet34"], [0], cells=names)
    out = make_report(study, tensorboard=False)

    summary = pd.read_csv(out / "summary.csv")
    assert summary.columns[:3].tolist() == ["label", "task", "arch"]
    assert sorted(zip(summary["label"], summary["task"])) == sorted(
        (lb, t) for lb in ("Mass", "Nodule") for t in ("binary", "multilabel") for _ in (32, 64)
    )
    mass = pd.read_csv(study / "bundles/multilabel__resnet34__r64__s0/predictions.csv").query(
        "finding == 'Mass' and fold == 'test'"
    )
    row = summary[(summary["label"] == "Mass") & (summary["task"] == "multilabel") & (summary["resolution"] == 64)]
    assert row["auc"].item() == pytest.approx(roc_auc_score(mass["label"], mass["score"]))
    for name in ("pooled", "verdict", "comparisons"):
        table = pd.read_csv(out / f"{name}.csv")
        assert set(zip(table["label"], table["task"])) == {
            (lb, t) for lb in ("Mass", "Nodule") for t in ("binary", "multilabel")
        }, name
    report = (out / "report.md").read_text()
    assert "resnet34 (multilabel)" in report and "Cells finished: 6 of the grid's 6" in report

    # a multi-label file that lost one finding's test rows is refused, naming the file and the finding
    path = study / "bundles/multilabel__resnet34__r32__s0/predictions.csv"
    frame = pd.read_csv(path)
    frame[~((frame["finding"] == "Nodule") & (frame["fold"] == "test"))].to_csv(path, index=False)
    with pytest.raises(CxrError, match=r"multilabel__resnet34__r32__s0/predictions.csv has 0 test row\(s\).*'Nodule'"):
        make_report(study, tensorboard=False)


# ------------------------------------------------------------------ the paper preset
def test_paper_preset_says_from_scratch_only_without_pretrained(tmp_path):
    resnet, densenet = tmp_path / "r.pth", tmp_path / "d.pth"
    resnet.write_bytes(b"x")
    densenet.write_bytes(b"x")
    plain = plan_study("paper", study_dir=tmp_path / "a", need_data=False)
    assert describe(plain)[0].endswith("DenseNet121), from scratch")
    started = plan_study(
        "paper",
        study_dir=tmp_path / "b",
        need_data=False,
        settings={"pretrained": f"resnet34={resnet},densenet121={densenet}"},
    )
    line = describe(started)[0]
    assert "from scratch" not in line and "fine-tuned from the --pretrained weights of resnet34, densenet121" in line
    assert any(f"resnet34={resnet}" in text for text in describe(started))
    with pytest.raises(CxrError, match="absent.pth for resnet34 not found"):  # before a long prepare
        plan_study(
            "paper",
            study_dir=tmp_path / "c",
            need_data=False,
            settings={"pretrained": f"resnet34={tmp_path / 'absent.pth'}"},
        )
