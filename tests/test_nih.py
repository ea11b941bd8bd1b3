"""The NIH loader reads every layout and CSV variant of the release, and refuses bad input."""

import pandas as pd
import pytest
from nih_layout import write_release

from monai_cxr.data.sources.nih import LABELS, read_nih
from monai_cxr.errors import CxrError


@pytest.mark.parametrize("layout", ["flat", "images", "nested"])
@pytest.mark.parametrize(
    "csv_name,sex_col,trailing",
    [
        ("Data_Entry_2017.csv", "Patient Gender", False),
        ("Data_Entry_2017_v2020.csv", "Patient Sex", True),
    ],
)
def test_every_layout_and_csv_variant(tmp_path, layout, csv_name, sex_col, trailing):
    rows = write_release(tmp_path, layout=layout, csv_name=csv_name, sex_col=sex_col, trailing_comma=trailing)
    index = read_nih(tmp_path)
    assert list(index.columns) == ["image_id", "patient_id", "view", "path", *LABELS]
    assert index["image_id"].tolist() == [r["image_id"] for r in rows]
    assert index["patient_id"].astype(int).tolist() == [r["patient"] for r in rows]
    for row, (_, got) in zip(rows, index.iterrows()):
        expected = set() if row["findings"] == "No Finding" else set(row["findings"].split("|"))
        assert {label for label in LABELS if got[label] == 1} == expected
        assert got["path"].endswith(row["image_id"])
    assert set(index["view"]) == {"PA", "AP"}


def test_view_filter(tmp_path):
    rows = write_release(tmp_path)
    index = read_nih(tmp_path, view="AP")
    assert len(index) == sum(r["view"] == "AP" for r in rows) > 0


def _rewrite_csv(root, transform):
    path = root / "Data_Entry_2017.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


@pytest.mark.parametrize(
    "transform,message",
    [
        (lambda ls: [ls[0].replace("Patient ID", "PatientID")] + ls[1:], "'Patient ID'"),
        (lambda ls: ls + [ls[1]], "duplicate image ids"),
        (lambda ls: [ls[0], ls[1].replace("No Finding", "Nodules")] + ls[2:], "line 2: unknown .*'Nodules'"),
        (lambda ls: [ls[0], ls[1].replace("No Finding", "No Finding|Mass")] + ls[2:], "line 2: 'No Finding' combined"),
        # NIH writes "No Finding" for a negative image: a blank cell is a malformed row, not all-negative
        (
            lambda ls: ls[:3] + [ls[3].replace("Nodule|Mass", "")] + ls[4:],
            r"^Data_Entry_2017.csv line 4: column 'Finding Labels' is blank; every row needs one$",
        ),
        (
            lambda ls: ls[:3] + [ls[3].replace("Nodule|Mass", " | ")] + ls[4:],
            r"^Data_Entry_2017.csv line 4: column 'Finding Labels' holds ' \| ', which names no finding; ",
        ),
        # a name lost between separators (a cut cell, a stray '|'): not read as the names that are left
        (
            lambda ls: ls[:3] + [ls[3].replace("Nodule|Mass", "Nodule|")] + ls[4:],
            r"^Data_Entry_2017.csv line 4: column 'Finding Labels' holds 'Nodule\|', with an empty name between",
        ),
        (lambda ls: ls[:3] + [ls[3].replace("Nodule|Mass", "Nodule| |Mass")] + ls[4:], "line 4: .* an empty name"),
        (lambda ls: ls[:1], "no rows"),
    ],
)
def test_bad_csv_is_one_clear_error(tmp_path, transform, message):
    write_release(tmp_path, patients=4)
    _rewrite_csv(tmp_path, transform)
    with pytest.raises(CxrError, match=message):
        read_nih(tmp_path)


def test_spaces_around_the_separator_are_one_label(tmp_path):
    """``Atelectasis |Mass`` beside ``Atelectasis`` once crashed get_dummies with two 'Atelectasis' columns."""
    rows = write_release(tmp_path, patients=4)
    spaced = {1: "Atelectasis |Mass", 2: "Atelectasis", 3: " Effusion| Atelectasis ", 4: "Mass | Nodule"}
    _rewrite_csv(
        tmp_path,
        lambda ls: [ls[0]] + [ln.replace(rows[i - 1]["findings"], spaced.get(i, "No Finding"), 1) for i, ln in
                              enumerate(ls[1:], start=1)],
    )  # fmt: skip
    index = read_nih(tmp_path)
    found = [{label for label in LABELS if row[label] == 1} for _, row in index.iterrows()]
    assert found[:4] == [{"Atelectasis", "Mass"}, {"Atelectasis"}, {"Effusion", "Atelectasis"}, {"Mass", "Nodule"}]
    assert len(found) > 4 and all(not labels for labels in found[4:])


def test_missing_folder_and_csv(tmp_path):
    with pytest.raises(CxrError, match="does not exist"):
        read_nih(tmp_path / "nowhere")
    with pytest.raises(CxrError, match="no Data_Entry_2017_v2020.csv or Data_Entry_2017.csv"):
        read_nih(tmp_path)


def test_missing_images_are_counted_and_droppable(tmp_path, log_lines):
    rows = write_release(tmp_path, patients=6)
    for row in rows[:2]:
        (tmp_path / "images" / row["image_id"]).unlink()
    with pytest.raises(CxrError, match=f"2 of {len(rows)} listed images are missing .*{rows[0]['image_id']}"):
        read_nih(tmp_path)
    messages = log_lines
    index = read_nih(tmp_path, drop_missing=True)
    assert len(index) == len(rows) - 2 and "dropping 2" in messages[0]
    assert not set(index["image_id"]) & {r["image_id"] for r in rows[:2]}


def test_full_release_scale_parses_labels_exactly(tmp_path):
    """Label counts from get_dummies equal a plain per-row parse on a few thousand rows."""
    rows = write_release(tmp_path, patients=5, official_lists=False)
    lines = (tmp_path / "Data_Entry_2017.csv").read_text().splitlines()
    body = [lines[1 + i % len(rows)] for i in range(3000)]
    body = [f"{i:08d}_000.png" + line[line.index(",") :] for i, line in enumerate(body)]
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join(lines[:1] + body) + "\n")
    (tmp_path / "images").rename(tmp_path / "old")
    (tmp_path / "images").mkdir()
    for i in range(3000):
        (tmp_path / "images" / f"{i:08d}_000.png").touch()
    index = read_nih(tmp_path)
    table = pd.read_csv(tmp_path / "Data_Entry_2017.csv")
    for label in LABELS:
        expected = table["Finding Labels"].str.split("|").apply(lambda ls, label=label: label in ls).sum()
        assert index[label].sum() == expected
