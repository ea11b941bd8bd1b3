"""`monai-cxr generate`: one bundle per cell, configs as data, clear refusals."""

import dataclasses
import json
import re

import pandas as pd
import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.cell.readme import with_result
from monai_cxr.cli import main
from monai_cxr.errors import CxrError
from monai_cxr.grid.docs import data_license
from monai_cxr.grid.generate import GridSettings, generate, template_dir
from monai_cxr.grid.networks import network_def
from monai_cxr.grid.settings import FLOAT_RANGES

HOSTILE = '$__import__("os").system("touch X")'


def settings(**kw):
    return GridSettings(**{"labels": ["Mass"], "resolutions": [16, 32], **TINY_GRID, **kw})


def test_one_bundle_per_cell_the_template_plus_an_override(study_copy):
    generate(study_copy, settings(labels=["Mass", "Nodule"], seeds=[0, 1]))
    names = sorted(p.name for p in (study_copy / "bundles").iterdir())
    assert names == sorted(
        f"{lab}__resnet34__r{r}__s{s}" for lab in ("mass", "nodule") for r in (16, 32) for s in (0, 1)
    )
    cell = study_copy / "bundles" / "nodule__resnet34__r32__s1"
    template = template_dir()
    for name in ("train.json", "evaluate.json", "multi_gpu_train.json", "logging.conf"):
        assert (cell / "configs" / name).read_bytes() == (template / "configs" / name).read_bytes()
    # inference.json stands alone: the template's, with the cell's own values filled in
    inference, base = (json.loads((d / "configs/inference.json").read_text()) for d in (cell, template))
    filled = {k for k in base if inference[k] != base[k]}
    assert inference["resolution"] == 32 and filled <= {
        "resolution",
        "arch",
        "seed",
        "network_def",
        "square",
        "batch_size",
        "num_workers",
    }
    override = json.loads((cell / "configs" / "override.json").read_text())
    assert (override["resolution"], override["seed"], override["epochs"], override["batch_size"]) == (32, 1, 2, 4)
    assert override["network_def"] == network_def("resnet34")
    assert (override["pretrained"], override["normalize"]) == (None, "image")
    # paths are relative to the cell: nothing names where the study lives
    for path in cell.rglob("*"):
        if path.is_file():
            assert str(study_copy) not in path.read_text(), path
    assert json.loads((cell / "cell.json").read_text()) == {
        "label": "Nodule",
        "arch": "resnet34",
        "resolution": 32,
        "seed": 1,
    }

    datalist = json.loads((cell / "datalist.json").read_text())
    index = pd.read_csv(study_copy / "data/index.csv", dtype=str)
    split = pd.read_csv(study_copy / "data/split.csv", dtype=str)
    for key, fold in (("training", "train"), ("validation", "val"), ("test", "test")):
        rows = split.index[split["fold"] == fold].tolist()
        assert [d["image"] for d in datalist[key]] == rows
        assert [d["label"][0] for d in datalist[key]] == index.loc[rows, "Nodule"].astype(int).tolist()

    grid = json.loads((study_copy / "study.json").read_text())
    assert "data" in grid and grid["grid"]["labels"] == ["Mass", "Nodule"] and len(grid["grid"]["cells"]) == 8


def test_each_cell_documents_itself_truthfully(study_copy):
    from importlib.metadata import version

    generate(study_copy, settings(resolutions=[32], archs=["densenet121"]))
    cell = study_copy / "bundles" / "mass__densenet121__r32__s0"
    meta = json.loads((cell / "configs" / "metadata.json").read_text())
    assert (meta["monai_version"], meta["pytorch_version"], meta["numpy_version"]) == (
        version("monai"),
        version("torch"),
        version("numpy"),
    )
    assert meta["required_packages_version"]["pytorch-ignite"] == version("pytorch-ignite")
    assert meta["name"] == "Mass at 32 px, DenseNet121 (monai-cxr cell)"
    assert "from scratch" in meta["description"] and "synthetic phantom" in meta["data_source"].lower()
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    readme = (cell / "docs" / "README.md").read_text()
    assert readme.startswith("# Mass: DenseNet121 at 32 x 32 px, seed 0\n") and "Not run yet" in readme
    assert "synthetic" in readme and "Apache License" in (cell / "docs" / "data_license.txt").read_text()
    assert (cell / "LICENSE").is_file()


@pytest.mark.parametrize(
    "study,words",
    [
        ({"data": {"dataset": "nih"}}, "NIH Clinical Center"),
        ({"data": {"dataset": "chexpert"}}, "Research Use Agreement"),
        ({"data": {"dataset": "chestmnist"}}, "CC BY 4.0"),
        ({"data": {"dataset": "csv"}}, "the terms of your own data"),
        ({"data": {"dataset": "nih"}, "synthetic": True}, "not radiographs of any person"),
    ],
)
def test_data_license_names_the_terms_of_the_studys_data(study, words):
    assert words in data_license(study)


def test_regenerating_leaves_cells_alone_and_protects_finished_ones(study_copy):
    generate(study_copy, settings(resolutions=[16]))
    cell = study_copy / "bundles" / "mass__resnet34__r16__s0"
    (cell / "run.json").write_text("{}")
    # the run's result, a package upgrade or new wording of the documents are no change of settings
    (cell / "docs" / "data_license.txt").write_text("older wording")
    readme = cell / "docs" / "README.md"
    readme.write_text(with_result(readme.read_text(), "Validation AUC 0.9"))
    meta = json.loads((cell / "configs" / "metadata.json").read_text())
    (cell / "configs" / "metadata.json").write_text(json.dumps({**meta, "numpy_version": "0.1"}))
    before = {p: p.stat().st_mtime_ns for p in cell.rglob("*")}
    generate(study_copy, settings(resolutions=[16]))
    assert {p: p.stat().st_mtime_ns for p in cell.rglob("*")} == before
    with pytest.raises(
        CxrError, match="finished with other settings \\(configs/override.json differs: epochs 2 -> 3\\)"
    ):
        generate(study_copy, settings(resolutions=[16], epochs=3))
    generate(study_copy, settings(resolutions=[16], epochs=3), force=True)
    assert not (cell / "run.json").exists() and "Not run yet" in readme.read_text()
    assert json.loads((cell / "configs/override.json").read_text())["epochs"] == 3


def run_cli(capsys, *args):
    """The CLI entry point in-process: exit code and stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--labels", "Mas"], "unknown label 'Mas'; labels of this dataset: Atelectasis, "),
        (["--resolutions", "24"], "resolution 24 is not in the cache (cached: 16, 32)"),
        (["--archs", "vgg"], "architecture 'vgg' is not one of resnet34, densenet121"),
        (["--archs", "densenet121"], "resolution 16 is below the 32 px that densenet121 accepts"),
        (["--subsample", "2", "--batch-size", "4"], "subsample 2 is smaller than the batch size 4"),
        (
            ["--subsample", "0", "--batch-size", "500"],
            "training images, fewer than the batch size 500 (resnet34, 16 px)",
        ),
        (["--learning-rate", "nan"], "--learning-rate nan is not a finite number"),
        (["--weight-decay", "inf"], "--weight-decay inf is not a finite number"),
        (["--augment-prob", "nan"], "--augment-prob nan is not a finite number"),
    ],
)
def test_bad_grid_is_one_line_and_exit_2(study_copy, capsys, args, message):
    base = {"--labels": "Mass", "--resolutions": "16,32"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    code, err = run_cli(capsys, "generate", "--study-dir", str(study_copy), *[x for kv in base.items() for x in kv])
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("learning_rate", float("nan"), "--learning-rate nan is not a finite number"),
        ("learning_rate", 0.0, "--learning-rate 0 is out of range; it must be above 0"),
        ("weight_decay", float("-inf"), "--weight-decay -inf is not a finite number"),
        ("weight_decay", -1e-4, "--weight-decay -0.0001 is out of range; it must be at least 0"),
        ("augment_prob", 1.5, "--augment-prob 1.5 is out of range; it must be between 0 and 1"),
        ("augment_prob", "0.5", "--augment-prob '0.5' is not a number"),
    ],
)
def test_real_settings_are_finite_and_in_range_without_the_command_line(name, value, message):
    with pytest.raises(CxrError, match="^" + re.escape(message) + "$"):
        settings(**{name: value}).check()


def test_full_epochs_need_a_batch_no_larger_than_the_training_images(study_copy):
    with pytest.raises(CxrError, match="^labels Mass, Nodule have .* training images, fewer than the batch size 999"):
        generate(study_copy, settings(labels=["Mass", "Nodule"], task="multilabel", subsample=0, batch_size=999))
    assert generate(study_copy, settings(resolutions=[16], subsample=0, batch_size=4))


def test_every_real_setting_is_checked():
    assert {f.name for f in dataclasses.fields(GridSettings) if f.type == "float"} == set(FLOAT_RANGES)


def test_a_study_path_with_hash_is_fine_but_pretrained_weights_with_hash_are_refused(tmp_path):
    study = make_hand_study(tmp_path / "a#b", {"Mass": None})
    (cell,) = generate(study, settings(resolutions=[16]))
    assert "#" not in (cell / "configs" / "override.json").read_text()
    weights = tmp_path / "w#1.pt"
    weights.write_bytes(b"")
    with pytest.raises(CxrError, match="contains '#'"):
        generate(study, settings(resolutions=[16], pretrained={"resnet34": str(weights)}))


def test_one_class_validation_fold_is_refused(tmp_path):
    # every val image (patients 0, 4, 8, 12) negative, the train fold mixed
    study = make_hand_study(tmp_path / "s", {"Rare": lambda i: (i // 2) % 4 != 0 and i % 2 == 0})
    with pytest.raises(CxrError, match=r"label 'Rare' has 0 positive and \d+ negative images in the validation fold"):
        generate(study, settings(labels=["Rare"], resolutions=[16]))
    # one positive in the val fold (image 0): an AUC, but no DeLong SE
    study = make_hand_study(tmp_path / "t", {"Rare": lambda i: i == 0 or ((i // 2) % 4 != 0 and i % 2 == 0)})
    with pytest.raises(CxrError, match="1 positive and 7 negative images in the validation fold"):
        generate(study, settings(labels=["Rare"], resolutions=[16]))


def test_one_class_test_fold_is_refused(tmp_path):
    # the val patients (0, 4, 8, 12) become the test fold: all negative
    study = make_hand_study(tmp_path / "s", {"Rare": lambda i: (i // 2) % 4 != 0 and i % 2 == 0})
    split = pd.read_csv(study / "data" / "split.csv", dtype=str)
    split.loc[split["fold"] == "val", "fold"] = "test"
    split.loc[split["patient_id"].isin(["pat001", "pat002", "pat005", "pat006"]), "fold"] = "val"
    split.to_csv(study / "data" / "split.csv", index=False)
    with pytest.raises(CxrError, match=r"label 'Rare' has 0 positive and \d+ negative images in the test fold"):
        generate(study, settings(labels=["Rare"], resolutions=[16]))


def test_hostile_label_is_only_data(tmp_path):
    study = make_hand_study(tmp_path / "s", {HOSTILE: None})
    (cell,) = generate(study, settings(labels=[HOSTILE], resolutions=[16]))
    assert cell.name.startswith("import-os-system-touch-x-") and cell.name.endswith("__resnet34__r16__s0")
    assert json.loads((cell / "cell.json").read_text())["label"] == HOSTILE
    # only cell.json and datalist.json (read with json, never by MONAI's parser) hold the label as given
    for path in cell.rglob("*"):
        if path.is_file() and path.name not in ("cell.json", "datalist.json"):
            assert "__import__" not in path.read_text() and "system(" not in path.read_text(), path
    assert json.loads((cell / "configs" / "metadata.json").read_text())["name"].startswith(cell.name.split("__")[0])


def test_generate_cli_writes_the_grid(study_copy):
    main(
        [
            "generate",
            "--study-dir",
            str(study_copy),
            "--labels",
            "Mass",
            "--resolutions",
            "16",
            "--seeds",
            "0,2",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--subsample",
            "8",
        ]
    )
    grid = json.loads((study_copy / "study.json").read_text())["grid"]
    assert grid["cells"] == ["mass__resnet34__r16__s0", "mass__resnet34__r16__s2"]
    assert grid["subsample"] == 8 and grid["balanced"] is True
