"""The patient-level split: three disjoint folds by patient, the requested shares, seeded, official lists honoured."""

import pandas as pd
import pytest
from nih_layout import write_release

from monai_cxr.data.sources.nih import official_lists, read_nih
from monai_cxr.data.split import patient_split
from monai_cxr.errors import CxrError


def _index(n_patients=50, per_patient=3):
    rows = [(f"{p}_{k}", str(p)) for p in range(n_patients) for k in range(1 + p % per_patient)]
    return pd.DataFrame(rows, columns=["image_id", "patient_id"])


def test_no_patient_in_two_folds_and_fraction():
    index = _index(50)
    split = patient_split(index, val_fraction=0.2, seed=3, test_fraction=0.0)  # the paper's 80/20
    assert split["image_id"].tolist() == index["image_id"].tolist()
    folds_per_patient = split.groupby("patient_id")["fold"].nunique()
    assert (folds_per_patient == 1).all()
    assert split.loc[split.fold == "val", "patient_id"].nunique() == 10
    assert set(split["fold"]) == {"train", "val"}


def test_three_folds_by_default_with_the_requested_shares():
    index = _index(50)
    split = patient_split(index, seed=3)  # val 0.1, test 0.2
    patients = split.groupby("fold")["patient_id"].nunique()
    assert patients.to_dict() == {"test": 10, "train": 35, "val": 5}
    assert (split.groupby("patient_id")["fold"].nunique() == 1).all()
    # the val patients do not depend on whether a test fold is drawn after them
    no_test = patient_split(index, val_fraction=0.1, seed=3, test_fraction=0.0)
    assert set(no_test.loc[no_test.fold == "val", "patient_id"]) == set(split.loc[split.fold == "val", "patient_id"])


@pytest.mark.parametrize(
    "val,test,message",
    [
        (0.5, 0.5, "leaves no patients to train on"),
        (0.7, 0.4, "must be below 1"),
        (0.0, 0.2, "val fraction 0.0 is not between 0 and 1"),
        (-0.1, 0.2, "val fraction -0.1"),
        (0.1, -0.2, "test fraction -0.2 is not in"),
        (0.1, 1.0, "test fraction 1.0 is not in"),
        (float("nan"), 0.2, "val fraction nan"),
    ],
)
def test_bad_fractions_are_one_line(val, test, message):
    with pytest.raises(CxrError, match=message) as err:
        patient_split(_index(50), val_fraction=val, test_fraction=test)
    assert "\n" not in str(err.value)


def test_seeded():
    index = _index(40)
    a, b = patient_split(index, seed=1), patient_split(index, seed=1)
    c = patient_split(index, seed=2)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


@pytest.mark.parametrize(
    "n_patients,val,test,fold",
    [
        (1, 0.2, 0.0, "val"),
        (3, 0.1, 0.0, "val"),
        (3, 0.9, 0.0, "train"),
        (4, 0.25, 0.1, "test"),
        (4, 0.5, 0.4, "train"),
    ],
)
def test_empty_fold_is_refused(n_patients, val, test, fold):
    with pytest.raises(CxrError, match=f"the {fold} fold would be empty"):
        patient_split(_index(n_patients), val_fraction=val, test_fraction=test)


def test_official_split(tmp_path):
    write_release(tmp_path, patients=25)
    index = read_nih(tmp_path)
    train_val, test = official_lists(tmp_path)
    split = patient_split(index, 0.2, 0, test_ids=test, train_val_ids=train_val)
    assert set(split.loc[split.fold == "test", "image_id"]) == test
    assert set(split.loc[split.fold != "test", "image_id"]) == train_val
    assert (split.groupby("patient_id")["fold"].nunique() == 1).all()
    assert split.loc[split.fold == "val", "patient_id"].nunique() == 4  # round(0.2 * 20)


def test_official_split_refuses_unlisted_and_overlapping(tmp_path):
    rows = write_release(tmp_path, patients=10)
    index = read_nih(tmp_path)
    train_val, test = official_lists(tmp_path)
    with pytest.raises(CxrError, match="in neither"):
        patient_split(index, test_ids=test, train_val_ids=train_val - {rows[0]["image_id"]})
    (tmp_path / "test_list.txt").write_text(rows[0]["image_id"] + "\n")
    with pytest.raises(CxrError, match="in both"):
        official_lists(tmp_path)
