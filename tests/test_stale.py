"""Every stage knows what it was built from: stale cells are refused, regenerated or left out, never reported.

Finished cells are made by hand here (the contract's ``run.json`` and ``predictions.csv``, with
``run.json["inputs"]`` as the bundle's run record copies it), so no test trains a network.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_GRID
from test_integrity_data import tree

from monai_cxr.cli import main
from monai_cxr.data.prepare import prepare
from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.report.load import load_study as load_report
from monai_cxr.run import executor
from monai_cxr.studydir import data_fingerprint, load_study, lock_cell, stale_reason


def finish(cell, inputs=None):
    """Make a generated cell finished, as its run would: predictions of the val fold, then run.json."""
    val = json.loads((cell / "datalist.json").read_text())["validation"]
    pd.DataFrame(
        {
            "image_id": [e["image_id"] for e in val],
            "patient_id": [e["patient_id"] for e in val],
            "label": [e["label"][0] for e in val],
            "score": np.linspace(0, 1, len(val)),
        }
    ).to_csv(cell / "predictions.csv", index=False)
    run = {
        **json.loads((cell / "cell.json").read_text()),
        "batch_size": 4,
        "epochs": 2,
        "train_seconds": 1.0,
        "images_per_s": 10.0,
        "peak_mem_mb": 1.0,
        "best_val_auc": 0.5,
        "best_epoch": 1,
        "device": "cpu",
        "inputs": json.loads((cell / "inputs.json").read_text()) if inputs is None else inputs,
    }
    (cell / "run.json").write_text(json.dumps(run))


def reprepare(study, seed):
    """prepare again on the same images with another split seed: new folds, a new data fingerprint (forced: it
    would otherwise refuse to replace the data of finished cells)."""
    data_dir = load_study(study)["data"]["data_dir"]
    folds = dict(val_fraction=0.2, test_fraction=0.2)
    prepare("nih", data_dir, study, [16, 32], seed=seed, **folds, workers=1, progress=False, force=True)


GRID = GridSettings(labels=["Mass"], resolutions=[16], seeds=[0, 1], **TINY_GRID)


def test_generate_records_the_inputs_of_each_cell(study_copy):
    cells = generate(study_copy, GRID)
    fingerprint = load_study(study_copy)["data"]["fingerprint"]
    assert fingerprint == data_fingerprint(study_copy)
    for cell in cells:
        inputs = json.loads((cell / "inputs.json").read_text())
        assert inputs["data"] == fingerprint and len(inputs["config"]) == 64
    assert (
        json.loads((cells[0] / "inputs.json").read_text())["config"]
        != json.loads((cells[1] / "inputs.json").read_text())["config"]
    )  # the seed is in the configs
    reprepare(study_copy, seed=0)  # the same data again: nothing is stale
    assert data_fingerprint(study_copy) == fingerprint
    assert [stale_reason(study_copy, cell) for cell in cells] == [None, None]


def test_the_report_leaves_out_stale_cells_and_says_why(study_copy):
    first, second = generate(study_copy, GRID)
    finish(first)
    finish(second, inputs={**json.loads((second / "inputs.json").read_text()), "config": "configs of before"})
    study = load_report(study_copy)
    assert [c.name for c in study.finished] == [first.name]
    (missing,) = study.missing
    assert missing.name == second.name and missing.reason.startswith("stale: it ran on other inputs")
    reprepare(study_copy, seed=1)  # new folds: every result is of other data now
    assert "generated from other data" in stale_reason(study_copy, first)
    with pytest.raises(CxrError, match="no current cell .*2 of 2 finished but are stale; .*generated from other data"):
        load_report(study_copy)


def test_run_refuses_cells_of_other_data_before_starting_any(study_copy, monkeypatch, capsys):
    started = []

    def outcomes(paths, *args):  # the executor itself is not what this test is about
        started.extend(paths)
        yield from ()

    monkeypatch.setattr(executor, "local_outcomes", outcomes)
    generate(study_copy, GRID)
    reprepare(study_copy, seed=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--study-dir", str(study_copy)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "cell mass__resnet34__r16__s0 (and 1 more: mass__resnet34__r16__s1) is stale: it was generated from " in err
    assert "monai-cxr generate" in err and started == []
    generate(study_copy, GRID)  # unfinished cells are simply regenerated
    assert executor.run_cells(study_copy, progress=False).ok and len(started) == 2


def test_generate_refuses_finished_cells_of_other_data_unless_forced(study_copy):
    first, _ = generate(study_copy, GRID)
    finish(first)
    reprepare(study_copy, seed=1)
    with pytest.raises(CxrError, match=f"cell {first.name} has finished on other data .prepare ran since"):
        generate(study_copy, GRID)
    generate(study_copy, GRID, force=True)
    assert not (first / "run.json").exists()
    assert json.loads((first / "inputs.json").read_text())["data"] == data_fingerprint(study_copy)


def test_a_result_of_configs_replaced_while_it_ran_is_not_kept_as_current(study_copy):
    first, _ = generate(study_copy, GRID)
    finish(first, inputs={**json.loads((first / "inputs.json").read_text()), "config": "configs of before"})
    with pytest.raises(CxrError, match="other configs than its bundle now holds"):
        generate(study_copy, GRID)
    generate(study_copy, GRID, force=True)
    assert not (first / "run.json").exists()


def test_generate_never_changes_a_running_cell(study_copy):
    first, _ = generate(study_copy, GRID)
    before = tree(study_copy / "bundles")
    held = lock_cell(first)  # as `run` holds it while the cell trains
    try:
        changed = GridSettings(**{**GRID.__dict__, "epochs": 5})
        with pytest.raises(CxrError, match=f"cell {first.name} is running"):
            generate(study_copy, changed, force=True)
    finally:
        os.close(held)
    assert tree(study_copy / "bundles") == before


def test_generate_refuses_data_that_prepare_did_not_finish(study_copy):
    split = study_copy / "data" / "split.csv"
    split.write_text(split.read_text().replace(",val\n", ",train\n", 1))  # as a prepare cut short would leave it
    with pytest.raises(CxrError, match="is not what prepare last recorded"):
        generate(study_copy, GRID)
    assert not (study_copy / "bundles").exists()


def flip_a_label(study):
    """Edit data/index.csv by hand (one label flipped): the data fingerprint no longer matches the cells'."""
    index = study / "data" / "index.csv"
    table = pd.read_csv(index)
    table.loc[0, "Mass"] = 1 - table.loc[0, "Mass"]
    table.to_csv(index, index=False)


def no_cell_starts(monkeypatch):
    started = []

    def outcomes(paths, *args):
        started.extend(paths)
        yield from ()

    monkeypatch.setattr(executor, "local_outcomes", outcomes)
    return started


def run_fails(study, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--study-dir", str(study)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    return err


def test_run_and_report_agree_that_finished_cells_of_other_data_are_stale(study_copy, monkeypatch, capsys):
    started = no_cell_starts(monkeypatch)
    first, second = generate(study_copy, GRID)
    finish(first)
    finish(second)
    flip_a_label(study_copy)
    err = run_fails(study_copy, capsys)  # not "2 of 2 cells already finished; skipping them", exit 0
    assert f"cell {first.name} (and 1 more: {second.name}) has finished but is stale: it was generated from " in err
    assert "monai-cxr generate` (--force for finished cells)" in err and started == []
    with pytest.raises(CxrError, match="2 of 2 finished but are stale; .*other data") as report:
        load_report(study_copy)
    assert "none has run.json" not in str(report.value)
    assert (first / "run.json").is_file() and (second / "run.json").is_file()  # results are never removed here


def test_run_neither_skips_nor_reruns_a_cell_with_run_json_but_no_predictions(study_copy, monkeypatch, capsys):
    started = no_cell_starts(monkeypatch)
    first, second = generate(study_copy, GRID)
    finish(first)
    (first / "predictions.csv").unlink()
    err = run_fails(study_copy, capsys)
    assert f"cell {first.name} has run.json but no predictions.csv" in err
    assert f"delete {first / 'run.json'} to run it again" in err and started == []
    assert (first / "run.json").is_file()
    with pytest.raises(CxrError, match="1 of 2 have run.json without predictions.csv"):
        load_report(study_copy)
    (first / "run.json").unlink()  # as the message says
    assert executor.run_cells(study_copy, progress=False).ok and started == [first, second]


def edit_override(cell, **values):
    path = cell / "configs" / "override.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=4) + "\n")


def test_configs_edited_after_generate_are_stale_for_run_and_report(study_copy, monkeypatch, capsys):
    started = no_cell_starts(monkeypatch)
    first, second = generate(study_copy, GRID)
    finish(second)
    edit_override(first, epochs=3, learning_rate=0.01)  # an unfinished cell: run would train it silently
    assert stale_reason(study_copy, first) == (
        "its configs were edited after generate (configs/override.json); run `monai-cxr generate --force` "
        "with the study's grid to restore them"
    )
    err = run_fails(study_copy, capsys)
    assert f"cell {first.name} is stale: its configs were edited after generate (configs/override.json)" in err
    assert started == []
    edit_override(second, epochs=3)  # a finished cell: its result is not of the grid's settings
    with pytest.raises(CxrError, match=f"cell {second.name}: its configs were edited after generate"):
        load_report(study_copy)
    generate(study_copy, GRID, force=True)  # restores both (the finished one's result is discarded)
    assert [stale_reason(study_copy, cell) for cell in (first, second)] == [None, None]


def test_what_a_run_writes_does_not_make_a_cell_stale(study_copy):
    first, second = generate(study_copy, GRID)
    finish(first)
    for name in ("models/model.pt", "logs/run.log", "eval/metrics.json", "inference/scores.csv"):
        (first / name).parent.mkdir(exist_ok=True)
        (first / name).write_text("written by the run")
    readme = first / "docs" / "README.md"
    readme.write_text(readme.read_text() + "\nResult: AUC 0.5\n")  # a finished cell's README holds its result
    assert stale_reason(study_copy, first) is None
    assert [c.name for c in load_report(study_copy).finished] == [first.name]
    (second / "datalist.json").unlink()
    assert "edited after generate (datalist.json)" in stale_reason(study_copy, second)
