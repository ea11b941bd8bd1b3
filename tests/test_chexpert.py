"""The CheXpert source: both --data-dir forms, views, the three uncertainty policies counted by
hand, the official split, one-line errors, and prepare end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from chexpert_layout import HAND_ROWS, generated_rows, write_chexpert
from PIL import Image

from monai_cxr.cli import main
from monai_cxr.data.cache import open_cache
from monai_cxr.data.images import make_square, read_image
from monai_cxr.data.prepare import prepare
from monai_cxr.data.resize import area_resize
from monai_cxr.data.sources.chexpert import LABELS, read_chexpert
from monai_cxr.errors import CxrError


def test_both_data_dir_forms_give_the_same_index(tmp_path):
    release = write_chexpert(tmp_path)
    outer, inner = read_chexpert(tmp_path), read_chexpert(release)
    pd.testing.assert_frame_equal(outer, inner)
    assert list(outer.columns) == ["image_id", "patient_id", "view", "path", *LABELS]
    first = outer.iloc[0]
    assert first["image_id"] == "train/patient00001/study1/view1_frontal.jpg"
    assert first["patient_id"] == "patient00001"
    assert first["path"] == str(release / "train/patient00001/study1/view1_frontal.jpg")
    assert outer["path"].map(lambda p: Image.open(p).size != (0, 0)).all()
    assert outer["image_id"].is_unique


def test_views_are_frontal_by_default_and_selectable(tmp_path):
    train, valid = generated_rows(12), generated_rows(3, first=64541, valid=True)
    write_chexpert(tmp_path, train, valid)
    rows = train + valid
    counts = {view: len(read_chexpert(tmp_path, view=view)) for view in ("frontal", "lateral", "all", "AP", "PA")}
    assert counts["frontal"] == sum(kind == "Frontal" for _, kind, _, _ in rows)
    assert counts["lateral"] == sum(kind == "Lateral" for _, kind, _, _ in rows) > 0
    assert counts["all"] == len(rows) == counts["frontal"] + counts["lateral"]
    assert counts["AP"] == sum(ap == "AP" for _, _, ap, _ in rows) > 0
    assert counts["AP"] + counts["PA"] == counts["frontal"]
    assert set(read_chexpert(tmp_path)["view"]) == {"AP", "PA"}
    assert set(read_chexpert(tmp_path, view="lateral")["view"]) == {"LATERAL"}


# Hand count of HAND_ROWS (frontal rows only: rows 1, 3, 4, 5, 6 of the table):
#   Edema cells -1, 0, 1, -1, blank;  Pleural Effusion blank, -1, -1, 1, blank;  No Finding 1 once.
@pytest.mark.parametrize(
    "policy,edema,effusion",
    [
        ("ones", (3, 2, 0), (3, 2, 0)),  # (positives, negatives, unknown)
        ("zeros", (1, 4, 0), (1, 4, 0)),
        ("ignore", (1, 2, 2), (1, 2, 2)),
    ],
)
def test_uncertainty_policies_match_a_hand_count(tmp_path, policy, edema, effusion):
    write_chexpert(tmp_path, HAND_ROWS, [])
    index = read_chexpert(tmp_path, uncertain=policy)
    assert len(index) == 5
    for label, expected in (("Edema", edema), ("Pleural Effusion", effusion)):
        values = index[label]
        assert ((values == 1).sum(), (values == 0).sum(), (values == -1).sum()) == expected
    assert index["No Finding"].tolist() == [0, 0, 0, 0, 1]  # blanks are negatives
    assert index["Cardiomegaly"].tolist() == [1, 0, 0, 0, 0]
    assert set(index["Fracture"]) == {0}  # a column left blank throughout
    all_views = read_chexpert(tmp_path, view="all", uncertain=policy)
    assert all_views.loc[1, "Edema"] == {"ones": 1, "zeros": 0, "ignore": -1}[policy]  # the lateral's -1


def test_official_split_uses_valid_csv_as_the_val_fold(tmp_path):
    write_chexpert(tmp_path / "d")
    main(
        [
            "prepare",
            "--dataset",
            "chexpert",
            "--data-dir",
            str(tmp_path / "d"),
            "--study-dir",
            str(tmp_path / "s"),
            "--split",
            "official",
            "--no-cache",
        ]
    )
    split = pd.read_csv(tmp_path / "s/data/split.csv")
    is_valid = split["image_id"].str.startswith("valid/")
    assert (split.loc[is_valid, "fold"] == "val").all() and (split.loc[~is_valid, "fold"] == "train").all()
    assert is_valid.sum() == sum(k == "Frontal" for _, k, _, _ in generated_rows(3, first=64541, valid=True))
    write_chexpert(tmp_path / "novalid", valid_rows=[])
    with pytest.raises(CxrError, match="--split official needs valid.csv"):
        prepare("chexpert", tmp_path / "novalid", tmp_path / "s2", [16], split="official", cache=False)


def _edit_train_csv(release, transform):
    path = release / "train.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


@pytest.mark.parametrize(
    "transform,message",
    [
        (lambda ls: [ls[0], ls[1].replace(",1.0,", ",2.0,", 1)] + ls[2:], r"train.csv line 2: column '.*' holds '2.0'"),
        (lambda ls: [ls[0].replace("Pleural Effusion", "Effusion")] + ls[1:], "no column 'Pleural Effusion'"),
        (lambda ls: [ls[0], ls[1].replace("patient00001", "p1")] + ls[2:], "line 2: no patientNNNNN"),
        (lambda ls: [ls[0], ls[1].replace("Frontal", "Oblique")] + ls[2:], "Frontal/Lateral is 'Oblique'"),
        (lambda ls: ls + [ls[1]], "duplicate image ids"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path, transform, message):
    release = write_chexpert(tmp_path, HAND_ROWS, [])
    _edit_train_csv(release, transform)
    with pytest.raises(CxrError, match=message):
        read_chexpert(tmp_path)


def test_missing_release_and_missing_images(tmp_path):
    with pytest.raises(CxrError, match="no train.csv"):
        read_chexpert(tmp_path)
    release = write_chexpert(tmp_path, HAND_ROWS, [])
    (release / "train" / HAND_ROWS[0][0]).unlink()
    with pytest.raises(CxrError, match="1 of 5 listed images are missing .*--drop-missing"):
        read_chexpert(tmp_path)
    assert len(read_chexpert(tmp_path, drop_missing=True)) == 4
    (release / "train" / HAND_ROWS[1][0]).unlink()  # a lateral: filtered out before the file check
    assert len(read_chexpert(tmp_path, drop_missing=True)) == 4


def test_prepare_end_to_end_keeps_the_contract(tmp_path):
    write_chexpert(tmp_path / "d")
    main(
        [
            "prepare",
            "--dataset",
            "chexpert",
            "--data-dir",
            str(tmp_path / "d"),
            "--study-dir",
            str(tmp_path / "s"),
            "--resolutions",
            "16,32",
            "--uncertain",
            "ignore",
            "--workers",
            "1",
            "--test-fraction",
            "0",
        ]
    )
    index = pd.read_csv(tmp_path / "s/data/index.csv", dtype={"image_id": str, "patient_id": str})
    split = pd.read_csv(tmp_path / "s/data/split.csv", dtype={"image_id": str, "patient_id": str})
    assert split["image_id"].tolist() == index["image_id"].tolist()
    assert split.groupby("patient_id")["fold"].nunique().max() == 1
    assert set(split["fold"]) == {"train", "val"}
    assert set(np.unique(index[list(LABELS)].to_numpy())) == {-1, 0, 1}
    study = json.loads((tmp_path / "s/study.json").read_text())["data"]
    assert study["dataset"] == "chexpert" and study["uncertain"] == "ignore" and study["view"] == "frontal"
    assert study["labels"] == list(LABELS) and "U-Ignore" in study["notes"][0]
    cached = open_cache(tmp_path / "s/data/cache", 16)
    assert cached.shape == (len(index), 16, 16)
    for row in (0, 1):  # landscape and portrait JPEGs: padded to square, then area-averaged
        expected = area_resize(np.asarray(make_square(read_image(index["path"][row]))), [16])[16]
        np.testing.assert_array_equal(cached[row], expected)
