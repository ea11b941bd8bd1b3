"""`--dataset csv`: any table of PNG/JPEG/NIfTI images, normalised alike, paths relative to the
table, and one-line errors for bad values, columns, folds and images."""

import json
import re
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from table_layout import base_image, write_table

from monai_cxr.cli import main
from monai_cxr.data.cache import open_cache
from monai_cxr.data.images import make_square, read_image
from monai_cxr.data.prepare import TableOptions, prepare
from monai_cxr.data.resize import area_resize
from monai_cxr.data.sources.table import read_table
from monai_cxr.errors import CxrError

COLUMNS = dict(path_col="file", patient_col="subject", label_cols=["Effusion", "Nodule"])


def test_index_from_a_table_with_relative_paths(tmp_path):
    rows = write_table(tmp_path)
    index = read_table(tmp_path / "tables/study.csv", **COLUMNS, view_col="view")
    assert list(index.columns) == ["image_id", "patient_id", "view", "path", "Effusion", "Nodule"]
    assert index["image_id"].tolist() == [r["file"] for r in rows]
    assert index["path"][0] == str(tmp_path / "images/p000/img0.png")
    assert index["patient_id"].tolist() == [r["subject"] for r in rows]
    assert index["Effusion"].tolist() == [int(r["Effusion"]) for r in rows]
    assert set(read_table(tmp_path / "tables/study.csv", **COLUMNS)["view"]) == {"UNKNOWN"}


def test_8_bit_16_bit_rgb_and_nifti_are_normalised_alike(tmp_path):
    rows = write_table(tmp_path, patients=6)
    index = read_table(tmp_path / "tables/study.csv", **COLUMNS)
    kinds = set()
    for i, row in enumerate(rows):
        decoded = np.asarray(read_image(index["path"][i]))
        if row["kind"] == "jpg":  # lossy: the luminance of the decoded JPEG, close to the source
            assert decoded.shape == base_image(i).shape
            assert np.abs(decoded.astype(int) - base_image(i)).mean() < 8
        else:
            np.testing.assert_array_equal(decoded, base_image(i))
        kinds.add(row["kind"])
    assert kinds == {"png8", "png16", "rgb", "nii", "nii3d", "jpg"}


def test_prepare_end_to_end_through_the_cli(tmp_path):
    rows = write_table(tmp_path)
    main(
        [
            "prepare",
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
            "--view-col",
            "view",
            "--study-dir",
            str(tmp_path / "s"),
            "--resolutions",
            "8,24",
            "--workers",
            "1",
        ]
    )
    index = pd.read_csv(tmp_path / "s/data/index.csv", dtype={"image_id": str, "patient_id": str})
    split = pd.read_csv(tmp_path / "s/data/split.csv", dtype={"image_id": str, "patient_id": str})
    assert len(index) == len(rows) and split["image_id"].tolist() == index["image_id"].tolist()
    assert split.groupby("patient_id")["fold"].nunique().max() == 1
    assert set(split["fold"]) == {"train", "val", "test"}
    cached = open_cache(tmp_path / "s/data/cache", 24)
    for i, row in enumerate(rows):
        if row["kind"] != "jpg":
            expected = area_resize(np.asarray(make_square(Image.fromarray(base_image(i)))), [24])[24]
            np.testing.assert_array_equal(cached[i], expected)
    study = json.loads((tmp_path / "s/study.json").read_text())["data"]
    assert study["dataset"] == "csv" and study["labels"] == ["Effusion", "Nodule"]
    assert study["label_cols"] == ["Effusion", "Nodule"] and study["table"] == str(tmp_path / "tables/study.csv")


def test_view_column_filters(tmp_path):
    rows = write_table(tmp_path, patients=20, per_patient=3)  # one lateral per patient
    options = TableOptions(table=str(tmp_path / "tables/study.csv"), view_col="view", **COLUMNS)
    prepare("csv", None, tmp_path / "s", [8], view="frontal", table=options, cache=False)
    index = pd.read_csv(tmp_path / "s/data/index.csv")
    assert len(index) == sum(r["view"] in ("PA", "AP") for r in rows) and set(index["view"]) == {"PA", "AP"}
    prepare("csv", None, tmp_path / "s", [8], view="lateral", table=options, cache=False)
    assert set(pd.read_csv(tmp_path / "s/data/index.csv")["view"]) == {"LL"}


def _edit(path, transform):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(transform(lines)) + "\n")


@pytest.mark.parametrize(
    "transform,message",
    [
        (lambda ls: [ls[0], ls[1][:-1] + "yes"] + ls[2:], r"study.csv line 2: column 'Nodule' holds 'yes'; allowed"),
        (lambda ls: [ls[0], ls[1][:-1] + "2"] + ls[2:], r"column 'Nodule' holds '2'"),
        (lambda ls: [ls[0].replace("Nodule", "Nodules")] + ls[1:], r"has no column 'Nodule'"),
        (lambda ls: ls + [ls[1]], "duplicate image ids"),
        (lambda ls: [ls[0], ls[1].replace(".png", ".dcm")] + ls[2:], r"line 2: .*\.dcm' is not a supported image"),
        (lambda ls: [ls[0], ls[1].replace("S000", "")] + ls[2:], "line 2: column 'subject' is blank"),
        (lambda ls: [ls[0], ls[1].replace("S000", "NaN")] + ls[2:], "line 2: column 'subject' holds 'NaN', a missing"),
        (lambda ls: ls[:3] + [ls[3].replace("S001", "#N/A")] + ls[4:], "line 4: column 'subject' holds '#N/A'"),
        (lambda ls: [ls[0], ls[1].replace("img0", "gone")] + ls[2:], "1 of 20 listed images are missing"),
    ],
)
def test_bad_table_is_one_clear_error(tmp_path, transform, message):
    write_table(tmp_path)
    _edit(tmp_path / "tables/study.csv", transform)
    with pytest.raises(CxrError, match=message):
        read_table(tmp_path / "tables/study.csv", **COLUMNS)


def test_a_bad_row_after_blank_lines_is_named_by_its_line_in_the_file(tmp_path):
    write_table(tmp_path)
    _edit(tmp_path / "tables/study.csv", lambda ls: [ls[0], "", "", ls[1].replace(".png", ".gif")] + ls[2:])
    with pytest.raises(CxrError, match=r"study.csv line 4: '../images/p000/img0.gif' is not a supported image"):
        read_table(tmp_path / "tables/study.csv", **COLUMNS)


def _link(tmp, name, how):
    """``images/NAME``, a symbolic or hard link to ``images/p000/img0.png``, as the table spells it."""
    getattr(tmp / "images" / name, how)(tmp / "images/p000/img0.png")
    return f"../images/{name}"


@pytest.mark.parametrize(
    "spelling",
    [
        lambda tmp: "../images/./p000/img0.png",  # another spelling of the relative path
        lambda tmp: str(tmp / "images/p000/img0.png"),  # the absolute path
        lambda tmp: _link(tmp, "soft.png", "symlink_to"),
        lambda tmp: _link(tmp, "hard.png", "hardlink_to"),
    ],
    ids=["dot", "absolute", "symlink", "hardlink"],
)
def test_one_file_listed_twice_under_other_names_is_refused(tmp_path, spelling):
    """It would be one image counted twice, here with the other label and another patient, so possibly in
    the train and the test fold at once."""
    write_table(tmp_path)
    name = spelling(tmp_path)
    _edit(tmp_path / "tables/study.csv", lambda ls: ls + [f"{name},S999,PA,1,0"])
    with pytest.raises(CxrError, match=rf"images '../images/p000/img0.png' and '{re.escape(name)}' are the same file"):
        read_table(tmp_path / "tables/study.csv", **COLUMNS)


def test_a_label_without_positives_in_a_fold_is_refused(tmp_path):
    write_table(tmp_path)
    table = tmp_path / "tables/study.csv"
    _edit(table, lambda ls: [ls[0]] + [line[:-1] + ("1" if i == 1 else "0") for i, line in enumerate(ls[1:])])
    options = TableOptions(table=str(table), **COLUMNS)
    with pytest.raises(CxrError, match=r"label 'Nodule' has no positive image in the (train|val) fold"):
        prepare("csv", None, tmp_path / "s", [8], table=options, cache=False)


def test_unreadable_image_fails_the_cache_naming_the_file(tmp_path):
    write_table(tmp_path)
    (tmp_path / "images/p000/img0.png").write_bytes(b"not an image")
    options = TableOptions(table=str(tmp_path / "tables/study.csv"), **COLUMNS)
    with pytest.raises(CxrError, match=r"cannot read image .*p000/img0.png"):
        prepare("csv", None, tmp_path / "s", [8], table=options, workers=1, progress=False)


@pytest.mark.parametrize("kind", ["nii", "tiff"])
def test_non_finite_pixels_fail_the_cache_naming_the_file(tmp_path, kind, capsys):
    """A NaN or Inf pixel in a float image used to turn its cache row black, silently."""
    write_table(tmp_path)
    pixels = base_image(4).astype(np.float32)
    pixels[2, 3] = np.nan if kind == "nii" else -np.inf
    if kind == "nii":  # row 4 (not the first, which is checked before the build) is a float NIfTI already
        bad = tmp_path / "images/p002/img0.nii"
        nib.save(nib.Nifti1Image(pixels.T, np.eye(4)), bad)
    else:
        bad = tmp_path / "images/p002/img0.tif"
        Image.fromarray(pixels, mode="F").save(bad)
        _edit(tmp_path / "tables/study.csv", lambda ls: [x.replace("p002/img0.nii,", "p002/img0.tif,") for x in ls])
    table = str(tmp_path / "tables/study.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leaked "invalid value encountered in cast"
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "--dataset", "csv", "--table", table, "--path-col", "file", "--patient-col", "subject",
                  "--label-cols", "Effusion,Nodule", "--study-dir", str(tmp_path / "s"), "--resolutions", "8",
                  "--workers", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"monai-cxr: error: image {bad} has non-finite pixel values (NaN or Inf) in 1 of ")
    with pytest.raises(CxrError, match="resolution 8 is not in the cache"):  # no black row went in
        open_cache(tmp_path / "s/data/cache", 8)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "csv", "--label-cols", "Effusion"], "--dataset csv needs --table"),
        (["--dataset", "csv", "--table", "T", "--data-dir", "."], "reads --table"),
        (["--dataset", "csv", "--table", "T", "--view", "PA"], "--view PA needs --view-col"),
        (["--dataset", "nih", "--data-dir", ".", "--uncertain", "zeros"], "--uncertain applies to --dataset chexpert"),
        (["--dataset", "chexpert"], "--dataset chexpert needs --data-dir"),
        (["--dataset", "nih", "--data-dir", ".", "--label-cols", "Mass"], "--label-cols applies to --dataset csv"),
        (["--dataset", "nih", "--data-dir", ".", "--patient-col", "foo"], "--patient-col applies to --dataset csv"),
        (["--dataset", "chexpert", "--data-dir", ".", "--path-col", "f"], "--path-col applies to --dataset csv"),
        (
            [
                "--dataset",
                "csv",
                "--table",
                "T",
                "--path-col",
                "file",
                "--patient-col",
                "subject",
                "--label-cols",
                "Effusion,Cancer",
            ],
            "has no column 'Cancer'",
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    write_table(tmp_path, patients=3)
    args = [str(tmp_path / "tables/study.csv") if a == "T" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--study-dir", str(tmp_path / "s"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_blank_id_column_cell_is_refused(tmp_path):
    write_table(tmp_path)
    table = tmp_path / "tables/study.csv"
    lines = table.read_text().splitlines()
    lines = [lines[0] + ",id"] + [f"{line},i{k}" for k, line in enumerate(lines[1:])]
    lines[3] = lines[3].rsplit(",", 1)[0] + ","
    table.write_text("\n".join(lines) + "\n")
    options = TableOptions(table=str(table), id_col="id", **COLUMNS)
    with pytest.raises(CxrError, match="line 4: column 'id' is blank"):
        prepare("csv", None, tmp_path / "s", [8], table=options, cache=False)
