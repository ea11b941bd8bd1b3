"""The patient-level split: disjoint patients, the requested share, seeded, official lists honoured."""

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
    split = patient_split(index, val_fraction=0.2, seed=3)
    assert split["image_id"].tolist() == index["image_id"].tolist()
    folds_per_patient = split.groupby("patient_id")["fold"].nunique()
    assert (folds_per_patient == 1).all()
    assert split.loc[split.fold == "val", "patient_id"].nunique() == 10
    assert set(split["fold"]) == {"train", "val"}


def test_seeded():
    index = _index(40)
    a, b = patient_split(index, seed=1), patient_split(index, seed=1)
    c = patient_split(index, seed=2)
    assert a.equals(b)
    assert not a["fold"].equals(c["fold"])


@pytest.mark.parametrize("n_patients,fraction", [(1, 0.2), (3, 0.1), (3, 0.9)])
def test_empty_fold_is_refused(n_patients, fraction):
    with pytest.raises(CxrError, match="a fold would be empty"):
        patient_split(_index(n_patients), val_fraction=fraction)


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
