"""Labels as a release names them, and images whose label is unknown (-1), in `generate`."""

import json

import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import GridSettings, generate


def test_alias_selects_the_column_and_unknown_rows_are_left_out(tmp_path):
    # CheXpert-style column with uncertain (-1) labels kept under --uncertain ignore
    study = make_hand_study(tmp_path / "s", {"Pleural Effusion": lambda i: (i % 3 == 0) - (i % 7 == 1)})
    generate(study, GridSettings(labels=["Effusion"], resolutions=[16], **TINY_GRID))
    cell = study / "bundles" / "pleural-effusion__resnet34__r16__s0"
    assert json.loads((cell / "cell.json").read_text())["label"] == "Pleural Effusion"
    datalist = json.loads((cell / "datalist.json").read_text())
    rows = [d["image"] for d in datalist["training"] + datalist["validation"]]
    unknown = [i for i in range(32) if (i % 3 == 0) - (i % 7 == 1) == -1]
    assert unknown and not set(rows) & set(unknown)
    assert len(rows) == 32 - len(unknown)
    assert {d["label"][0] for d in datalist["training"]} == {0, 1}


def test_unknown_rows_do_not_count_as_negatives(tmp_path):
    # every val image (patients 0, 4, 8, 12 -> rows 0,1, 8,9, 16,17, 24,25) positive or unknown
    val_rows = {0, 1, 8, 9, 16, 17, 24, 25}
    study = make_hand_study(
        tmp_path / "s", {"Mass": lambda i: (1 if i in (0, 8, 16) else -1) if i in val_rows else i % 2}
    )
    with pytest.raises(CxrError, match=r"has \d+ positive and 0 negative images in the validation fold"):
        generate(study, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))


def test_ids_that_look_like_missing_values_stay_text(tmp_path):
    import pandas as pd

    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2})
    index = pd.read_csv(study / "data/index.csv", dtype=str)
    split = pd.read_csv(study / "data/split.csv", dtype=str)
    for table in (index, split):
        table.loc[table["patient_id"] == "pat001", "patient_id"] = "NA"
    index.to_csv(study / "data/index.csv", index=False)
    split.to_csv(study / "data/split.csv", index=False)
    generate(study, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    datalist = json.loads((study / "bundles/mass__resnet34__r16__s0/datalist.json").read_text())
    assert "NA" in {d["patient_id"] for d in datalist["training"]}
