"""A study runs end to end on every source: prepare -> generate -> run -> predictions contract."""

import json

import pandas as pd
import pytest
from chestmnist_layout import write_chestmnist
from chexpert_layout import generated_rows, write_chexpert
from conftest import TINY_GRID
from table_layout import write_table

from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.run.executor import run_cells

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


def chexpert(tmp_path):
    write_chexpert(tmp_path / "chexpert", train_rows=generated_rows(40))
    return ["--dataset", "chexpert", "--data-dir", str(tmp_path / "chexpert"), "--uncertain", "ignore"], "Effusion"


def chestmnist(tmp_path):
    write_chestmnist(tmp_path / "mnist", sides=(28, 64))
    return ["--dataset", "chestmnist", "--data-dir", str(tmp_path / "mnist")], "Mass"


def table(tmp_path):
    write_table(tmp_path, patients=30)
    return [
        "--dataset",
        "csv",
        "--table",
        str(tmp_path / "tables/study.csv"),
        "--path-col",
        "file",
        "--patient-col",
        "subject",
        "--label-cols",
        "Effusion,Nodule",
    ], "Nodule"


@pytest.mark.parametrize("source", [chexpert, chestmnist, table])
def test_a_cell_runs_on_each_source(tmp_path, source):
    args, label = source(tmp_path)
    study = tmp_path / "study"
    main(
        [
            "prepare",
            *args,
            "--study-dir",
            str(study),
            "--resolutions",
            "16",
            "--workers",
            "1",
            *(["--val-fraction", "0.2"] if source is not chestmnist else []),
        ]
    )  # a val fold as large as before
    generate(study, GridSettings(labels=[label], resolutions=[16], **TINY_GRID))
    summary = run_cells(study)
    assert summary.failed == []
    (cell,) = (study / "bundles").iterdir()
    predictions = pd.read_csv(cell / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    index = pd.read_csv(study / "data/index.csv", dtype={"image_id": str, "patient_id": str})
    split = pd.read_csv(study / "data/split.csv", dtype={"image_id": str})
    column = json.loads((cell / "cell.json").read_text())["label"]
    known = index[column].isin([0, 1]).to_numpy()
    scored = pd.concat(
        [index[(split["fold"] == fold).to_numpy() & known].assign(fold=fold) for fold in ("val", "test")]
    )
    assert list(predictions.columns) == ["image_id", "patient_id", "fold", "label", "score"]
    assert predictions["image_id"].tolist() == scored["image_id"].tolist()
    assert predictions["fold"].tolist() == scored["fold"].tolist()
    assert predictions["label"].tolist() == scored[column].tolist()
    assert predictions["score"].between(0, 1).all()
