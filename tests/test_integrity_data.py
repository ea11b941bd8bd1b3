"""Never writing into the user's data; a failed prepare leaves the study as it was; three folds on the CLI."""

import hashlib
import json

import pandas as pd
import pytest
from nih_layout import write_release

from monai_cxr import pipeline
from monai_cxr.cli import main
from monai_cxr.data.prepare import prepare
from monai_cxr.errors import CxrError
from monai_cxr.grid import presets
from monai_cxr.grid.settings import GridSettings
from monai_cxr.run import executor
from monai_cxr.studydir import data_fingerprint


def tree(root):
    """Every path under ``root`` (itself included) with its content hash, mode, size and mtime."""
    out = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        out[str(path.relative_to(root))] = (digest, st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_prepare_never_writes_into_the_data_folder(tmp_path, capsys):
    nih = tmp_path / "nih"
    write_release(nih, patients=20, layout="nested", csv_name="Data_Entry_2017_v2020.csv")
    before = tree(nih)
    base = ["prepare", "--data-dir", str(nih), "--resolutions", "16", "--workers", "1"]
    main([*base, "--study-dir", str(tmp_path / "s"), "--split", "official"])
    main([*base, "--study-dir", str(tmp_path / "s"), "--seed", "3"])
    for inside in (nih / "study", nih, nih / "images_001" / "s"):  # a study inside the dataset is refused
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--study-dir", str(inside)])
        assert exit_info.value.code == 2 and "is inside --data-dir" in error_line(capsys)
    assert tree(nih) == before


def test_study_with_a_data_dir_only_reads_it_even_in_the_v2020_layout(tmp_path, monkeypatch):
    """The preset synthesises its phantom only without --data-dir, and only into the study directory."""
    nih = tmp_path / "nih"
    write_release(nih, patients=30, csv_name="Data_Entry_2017_v2020.csv")  # no Data_Entry_2017.csv
    before = tree(nih)
    tiny = presets.Preset(
        name="tiny",
        description="one cell",
        synthetic=True,
        phantom={"patients": 24, "size": 64, "seed": 0, "prevalence": 0.4, "workers": 1},
        grid=GridSettings(labels=["Mass"], resolutions=[16]),
    )
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny)
    stages = []  # the training stages are not what this test is about
    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: stages.append("generate"))
    monkeypatch.setattr(executor, "run_cells", lambda *a, **k: stages.append("run") or executor.RunSummary())
    assert pipeline.run_study("tiny", study_dir=tmp_path / "s", data_dir=nih, progress=False) == 0
    assert tree(nih) == before and stages == ["generate", "run"]
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study["data"]["data_dir"] == str(nih.resolve()) and study["synthetic"] is False
    assert not (tmp_path / "s" / "phantom").exists()


def test_synth_refuses_a_folder_that_holds_a_dataset(tmp_path, capsys):
    nih = tmp_path / "nih"
    write_release(nih, patients=4, csv_name="Data_Entry_2017_v2020.csv")
    before = tree(nih)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(nih), "--patients", "2", "--size", "32", "--workers", "1"])
    assert exit_info.value.code == 2 and "is not empty" in error_line(capsys)
    assert tree(nih) == before


def test_a_failed_prepare_leaves_every_file_of_the_study_as_it_was(tmp_path):
    write_release(tmp_path / "nih", patients=20, size=48)
    study = tmp_path / "s"
    prepare("nih", tmp_path / "nih", study, [16], workers=1, progress=False)
    before = tree(study)
    with pytest.raises(CxrError, match="resolution 64 exceeds the source size"):  # found during the cache
        prepare("nih", tmp_path / "nih", study, [16, 64], seed=1, workers=1, progress=False)
    with pytest.raises(CxrError, match="has no column .Nodule."):  # a table source without a named label
        (tmp_path / "t.csv").write_text("path,patient_id,Mass\nnih/images/x.png,1,1\n")
        prepare("csv", None, study, [16], table=_table(tmp_path / "t.csv", ["Mass", "Nodule"]), progress=False)
    assert tree(study) == before


def _table(path, labels):
    from monai_cxr.data.prepare import TableOptions

    return TableOptions(table=str(path), label_cols=labels)


def test_three_folds_from_the_command_line_are_recorded(tmp_path, capsys):
    write_release(tmp_path / "nih", patients=40)
    base = ["prepare", "--data-dir", str(tmp_path / "nih"), "--no-cache"]
    main([*base, "--study-dir", str(tmp_path / "a")])  # defaults: val 0.1, test 0.2
    split = pd.read_csv(tmp_path / "a/data/split.csv")
    assert split.groupby("fold")["patient_id"].nunique().to_dict() == {"test": 8, "train": 28, "val": 4}
    data = json.loads((tmp_path / "a/study.json").read_text())["data"]
    assert (data["val_fraction"], data["test_fraction"]) == (0.1, 0.2)
    assert data["fingerprint"] == data_fingerprint(tmp_path / "a")

    main([*base, "--study-dir", str(tmp_path / "b"), "--test-fraction", "0", "--val-fraction", "0.2"])  # 80/20
    assert set(pd.read_csv(tmp_path / "b/data/split.csv")["fold"]) == {"train", "val"}
    assert json.loads((tmp_path / "b/study.json").read_text())["data"]["test_fraction"] == 0

    main([*base, "--study-dir", str(tmp_path / "c"), "--split", "official"])
    assert json.loads((tmp_path / "c/study.json").read_text())["data"]["test_fraction"] is None
    for args, message in (
        (["--val-fraction", "0.5", "--test-fraction", "0.5"], "leaves no patients to train"),
        (["--split", "official", "--test-fraction", "0.1"], "--test-fraction applies to --split random"),
        (["--val-fraction", "0.01"], "the val fold would be empty"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, "--study-dir", str(tmp_path / "d"), *args])
        assert exit_info.value.code == 2 and message in error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--study-dir", str(tmp_path / "d"), "--test-fraction", "-0.1"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "d").exists()


def _finished(study, name="mass__resnet34__r16__s0"):
    """A finished cell trained on the study's current data, as far as prepare can tell (its run.json)."""
    cell = study / "bundles" / name
    cell.mkdir(parents=True)
    (cell / "run.json").write_text(json.dumps({"inputs": {"data": data_fingerprint(study)}}))


def test_prepare_refuses_to_replace_the_data_of_finished_cells_unless_forced(tmp_path, capsys):
    write_release(tmp_path / "nih", patients=20, size=48)
    study = tmp_path / "s"
    base = ["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(study), "--resolutions", "16"]
    main([*base, "--workers", "1"])
    _finished(study)
    main([*base, "--workers", "1", "--resolutions", "16,32"])  # the same data, one more size: nothing replaced
    before = tree(study)
    for args, what in (
        (["--seed", "3"], "split.csv"),
        (["--view", "PA"], "index.csv, split.csv and the resize cache (other images, or changed files)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *args])
        assert exit_info.value.code == 2
        assert error_line(capsys) == (
            f"monai-cxr: error: these data would replace {what} of {study}, on which 1 finished cell(s) were "
            "trained (e.g. mass__resnet34__r16__s0), so their results would become stale; give another "
            "--study-dir, or --force to prepare anyway\n"
        )
    (tmp_path / "nih/images/00000001_000.png").touch()  # a newer image: the cache would be rebuilt
    with pytest.raises(SystemExit):
        main(base)
    assert "replace the resize cache (other images, or changed files) of" in error_line(capsys)
    assert tree(study) == before  # split, index, cache and study.json as they were
    main([*base, "--seed", "3", "--force", "--workers", "1"])
    assert (
        data_fingerprint(study)
        != json.loads((study / "bundles/mass__resnet34__r16__s0/run.json").read_text())["inputs"]["data"]
    )


def test_study_finds_a_label_typo_before_it_builds_the_cache(tmp_path, capsys):
    write_release(tmp_path / "nih", patients=20, size=48)
    study = tmp_path / "s"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "study",
                "--data-dir",
                str(tmp_path / "nih"),
                "--study-dir",
                str(study),
                "--labels",
                "Mass,Bogus",
                "--resolutions",
                "16",
            ]
        )
    assert exit_info.value.code == 2
    assert error_line(capsys).startswith("monai-cxr: error: unknown label 'Bogus'; labels of this dataset: ")
    assert not (study / "data").exists()
