"""`monai-cxr study` takes the whole grid: presets are defaults, a given option wins, --dry-run writes nothing."""

import json
import shutil

import click
import pytest
from conftest import TINY_GRID

from monai_cxr.cli import cli, main
from monai_cxr.grid import presets
from monai_cxr.grid.settings import GridSettings
from monai_cxr.run import executor

TINY = presets.Preset(
    name="tiny",
    description="a tiny phantom",
    synthetic=True,
    phantom={"patients": 24, "size": 64, "seed": 0, "prevalence": 0.4, "workers": 1},
    grid=GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID),
    jobs=2,
)


@pytest.fixture
def tiny_preset(monkeypatch):
    """The `tiny` preset, selectable with --preset tiny; cells are not trained (run_cells records its arguments)."""
    monkeypatch.setitem(presets.PRESETS, "tiny", TINY)
    (option,) = [p for p in cli.commands["study"].params if p.name == "preset"]
    monkeypatch.setattr(option, "type", click.Choice([*option.type.choices, "tiny"]))
    seen = {}

    def fake_run_cells(study_dir, progress=True, **kwargs):
        seen.update(kwargs)
        return executor.RunSummary()

    monkeypatch.setattr(executor, "run_cells", fake_run_cells)
    return seen


def study_json(study):
    return json.loads((study / "study.json").read_text())


def test_dry_run_prints_merged_grid_cells_and_work_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["study", "--dry-run", "--labels", "Mass", "--resolutions", "64,256", "--epochs", "2", "--subsample", "100"])
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # not even studies/quick
    assert "studies/quick (does not exist yet)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["labels"].split()[1:] == ["Mass", "(option)"]
    assert lines["resolutions"].split()[1:] == ["64,256", "(option)"]
    assert lines["batch_size"].split()[1:] == ["16", "(preset)"]  # the quick preset's, not the option's 32
    assert lines["jobs"].split()[1:] == ["2", "(preset)"]
    assert "cells: 2 = 1 labels x 2 resolutions x 1 archs x 1 seeds" in out
    assert "work: 2 epochs x 100 images (subsample) = 200 training images per cell; 400 in all" in out
    assert "64 px 6 %, 256 px 94 %" in out  # 64² : 256² = 1 : 16
    # the headline says what the options made of the preset, not the preset's own description
    assert out.splitlines()[0] == (
        "study quick: the phantom, Mass at 64 and 256 px, ResNet34 (preset quick, changed by options), from scratch"
    )
    main(["study", "--dry-run", "--epochs", "2"])  # options that leave the headline as it was
    assert capsys.readouterr().out.splitlines()[0].startswith(f"study quick: {presets.PRESETS['quick'].description}")


def test_the_options_line_shows_table_columns_by_their_option_names(tmp_path, tiny_preset, capsys):
    from table_layout import write_table

    write_table(tmp_path)
    table = ["--table", str(tmp_path / "tables/study.csv"), "--path-col", "file", "--patient-col", "subject"]
    with pytest.raises(SystemExit) as exit_info:  # 20 images: too few for a validation AUC, found after the plan
        main(
            [
                "study",
                "--preset",
                "tiny",
                "--study-dir",
                str(tmp_path / "s"),
                "--dataset",
                "csv",
                *table,
                "--label-cols",
                "Effusion,Nodule",
                "--labels",
                "Nodule",
            ]
        )
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and "label 'Nodule' has 1 positive and 1 negative images" in err
    (line,) = [line for line in out.splitlines() if line.startswith("options over the preset")]
    assert "TableOptions" not in line
    assert f"table={tmp_path / 'tables/study.csv'}" in line and "path_col=file" in line
    assert "patient_col=subject" in line and "label_cols=Effusion,Nodule" in line
    assert out.splitlines()[0].startswith(f"study tiny: the table {tmp_path / 'tables/study.csv'}, Nodule at 16 px")


def test_dry_run_of_full_epochs_counts_the_prepared_train_fold(tiny_study, tmp_path, capsys):
    study = tmp_path / "s"
    shutil.copytree(tiny_study, study)
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    main(["study", "--dry-run", "--study-dir", str(study), "--subsample", "0", "--resolutions", "16"])
    out = capsys.readouterr().out
    train = sum(line.endswith(",train") for line in (study / "data" / "split.csv").read_text().splitlines())
    assert train > 0
    assert f"work: 3 epochs x {train:,} images (the train fold) = {3 * train:,} training images per cell" in out
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before

    main(["study", "--dry-run", "--study-dir", str(tmp_path / "new"), "--subsample", "0"])
    assert "3 full epochs per cell; the train fold's size is known after prepare" in capsys.readouterr().out
    assert not (tmp_path / "new").exists()


def test_dry_run_of_a_preset_without_its_data_says_so(tmp_path, capsys):
    main(["study", "--dry-run", "--preset", "paper", "--study-dir", str(tmp_path / "p"), "--seeds", "0,1"])
    out = capsys.readouterr().out
    assert "MISSING: preset 'paper' needs --data-dir" in out
    assert "cells: 288 = 8 labels x 9 resolutions x 2 archs x 2 seeds" in out
    with pytest.raises(SystemExit) as exit_info:  # without --dry-run it is an error, before anything is written
        main(["study", "--preset", "paper", "--study-dir", str(tmp_path / "p")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "monai-cxr: error: preset 'paper' needs --data-dir"
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gpus-per-cell", "1"], "--address and --gpus-per-cell apply to --executor ray"),
        (["--archs", "vgg"], "architecture 'vgg' is not one of resnet34, densenet121"),
        (["--resolutions", "512"], "resolution 512 exceeds the 256 px phantom of preset 'quick'"),
        (["--lr", "0.1", "--learning-rate", "0.2"], "--lr is the old name of --learning-rate; give one"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_written(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--study-dir", str(tmp_path / "s"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "s").exists()


def test_given_options_win_over_the_preset_and_the_merge_is_recorded(tmp_path, tiny_preset):
    study = tmp_path / "s"
    main(
        [
            "study",
            "--preset",
            "tiny",
            "--study-dir",
            str(study),
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--resolutions",
            "16,32",
            "--seeds",
            "0,1",
            "--loader-workers",
            "1",
            "--amp",
            "bf16",
            "--unbalanced",
            "--executor",
            "ray",
            "--address",
            "auto",
            "--gpus-per-cell",
            "1",
            "--nproc-per-node",
            "2",
            "--val-fraction",
            "0.3",
            "--seed",
            "5",
        ]
    )
    grid = study_json(study)["grid"]
    assert (grid["epochs"], grid["learning_rate"], grid["seeds"], grid["loader_workers"]) == (1, 0.01, [0, 1], 1)
    assert (grid["amp"], grid["balanced"]) == ("bf16", False)
    # not given: the preset's value, not the option's default (batch size 32, 2048 images)
    assert (grid["batch_size"], grid["subsample"], grid["labels"]) == (4, 8, ["Mass"])
    assert len(grid["cells"]) == 4
    train = json.loads((study / "bundles" / "mass__resnet34__r32__s1" / "configs" / "override.json").read_text())
    assert (train["num_workers"], train["learning_rate"], train["epochs"]) == (1, 0.01, 1)  # the template's key names
    data = study_json(study)["data"]
    assert (data["dataset"], data["val_fraction"], data["seed"], data["resolutions"]) == ("nih", 0.3, 5, [16, 32])
    recorded = study_json(study)["study"]
    assert recorded["preset"] == "tiny" and {"epochs", "learning_rate", "executor"} <= set(recorded["given"])
    assert "batch_size" not in recorded["given"]
    assert tiny_preset == {
        "executor": "ray",
        "address": "auto",
        "gpus_per_cell": 1.0,
        "cpus_per_cell": 1.0,
        "nproc_per_node": 2,
    }  # Ray fills the cluster: the preset's local jobs are not passed
    assert recorded["run"] == tiny_preset


def test_study_with_only_a_data_dir_reads_it_as_nih(tmp_path, tiny_preset):
    from monai_cxr.data.phantom import synthesize

    synthesize(tmp_path / "nih", patients=24, size=64, seed=1, prevalence=0.4, workers=1)
    study = tmp_path / "s"
    main(["study", "--preset", "tiny", "--study-dir", str(study), "--data-dir", str(tmp_path / "nih")])
    data = study_json(study)["data"]
    assert data["dataset"] == "nih" and data["data_dir"] == str((tmp_path / "nih").resolve())
    assert not (study / "phantom").exists()  # the user's data, not a synthesised phantom
    assert tiny_preset["jobs"] == 2  # the preset's local parallelism
