"""Label names across releases, and which folds a label can be studied in."""

import pandas as pd
import pytest

from monai_cxr.data.labels import (
    fold_counts,
    label_columns,
    require_positives,
    resolve_label,
)
from monai_cxr.data.sources.chestmnist import FILE_ORDER
from monai_cxr.data.sources.chexpert import LABELS as CHEXPERT
from monai_cxr.data.sources.nih import LABELS as NIH
from monai_cxr.errors import CxrError


@pytest.mark.parametrize(
    "name,columns,expected",
    [
        ("Effusion", CHEXPERT, "Pleural Effusion"),
        ("Pleural Effusion", NIH, "Effusion"),
        ("effusion", NIH, "Effusion"),
        ("Pleural Thickening", NIH, "Pleural_Thickening"),
        ("pleural", FILE_ORDER, "Pleural_Thickening"),  # MedMNIST's own name
        ("Cardiomegaly", CHEXPERT, "Cardiomegaly"),
        ("lung opacity", CHEXPERT, "Lung Opacity"),
    ],
)
def test_names_of_one_finding_select_it_in_every_release(name, columns, expected):
    assert resolve_label(name, columns) == expected


def test_unknown_and_ambiguous_labels(tmp_path):
    with pytest.raises(CxrError, match="unknown label 'Nodule'; labels of this dataset: No Finding, "):
        resolve_label("Nodule", CHEXPERT)
    with pytest.raises(CxrError, match="unknown label 'pleural'"):
        resolve_label("pleural", CHEXPERT)  # Pleural Effusion and Pleural Other are not thickening
    with pytest.raises(CxrError, match="matches several columns"):
        resolve_label("effusion", ["Effusion", "EFFUSION"])


def test_fold_counts_leave_unknown_out():
    index = pd.DataFrame(
        {
            "image_id": list("abcdef"),
            "patient_id": list("abcdef"),
            "view": "PA",
            "path": "x",
            "Edema": [1, -1, 0, 1, -1, 0],
        }
    )
    folds = pd.DataFrame({"fold": ["train", "train", "train", "val", "val", "test"]})
    assert label_columns(index) == ["Edema"]
    assert fold_counts(index, folds, "Edema") == {"train": (1, 1), "val": (1, 0), "test": (0, 1)}
    with pytest.raises(
        CxrError,
        match=r"label 'Edema' has no negative image in the val fold "
        r"\(train 1 positive / 1 negative; val 1 positive / 0 negative\)",
    ):
        require_positives(index, folds, "Edema")
