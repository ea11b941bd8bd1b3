"""A trained cell scores image files: the stock runner and `monai-cxr predict` give the validation scores of
predictions.csv for the study's own val images, and every encoding of one picture scores alike."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_GRID
from inference_files import full_range, write_encodings
from PIL import Image

from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.run.cell import bundle_command

pytestmark = pytest.mark.slow  # trains a network: left out of `make test-fast`

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tiny_study, tmp_path_factory):
    """A finished 16 px cell of the tiny study, and a folder holding its val images as the study's PNG files."""
    root = tmp_path_factory.mktemp("infer")
    study = root / "study"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("bundles", "report"))
    (cell,) = generate(study, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    proc = subprocess.run(bundle_command(cell), capture_output=True, text=True, env=ENV, cwd=cell)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = pd.read_csv(cell / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    index = pd.read_csv(study / "data/index.csv", dtype=str).set_index("image_id")
    val = root / "val images"
    for image_id in predictions["image_id"]:
        (val / "sub").mkdir(parents=True, exist_ok=True)
        shutil.copy(index.loc[image_id, "path"], val / "sub" / image_id)
    return cell, val, predictions


def expect_validation_scores(scores: pd.DataFrame, predictions: pd.DataFrame, name_of) -> None:
    assert list(scores.columns) == ["image", "score"]
    assert sorted(scores["image"]) == scores["image"].tolist()  # sorted paths
    by_id = dict(zip(scores["image"].map(name_of), scores["score"]))
    assert sorted(by_id) == sorted(predictions["image_id"])
    got = np.array([by_id[i] for i in predictions["image_id"]])
    assert np.ptp(predictions["score"]) > 1e-3  # the network tells the images apart: equality means something
    np.testing.assert_allclose(got, predictions["score"].to_numpy(), rtol=0, atol=1e-4)


def test_stock_runner_scores_a_folder_as_validation_did(trained, tmp_path):
    cell, val, predictions = trained
    # from another folder, as the bundle README says: the cell is the bundle_root
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--bundle_root",
            str(cell),
            "--config_file",
            str(cell / "configs/inference.json"),
            "--dataset_dir",
            str(val),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing written relative to the working directory
    scores = pd.read_csv(cell / "inference/scores.csv", dtype={"image": str})
    assert scores["image"].str.startswith("sub/").all()  # relative to the dataset_dir
    expect_validation_scores(scores, predictions, os.path.basename)


def test_stock_runner_on_a_folder_without_images_names_it(trained, tmp_path):
    cell, _, _ = trained
    (tmp_path / "notes.txt").write_text("no image here")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/inference.json",
            "--dataset_dir",
            str(tmp_path),
        ],
        cwd=cell,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode != 0
    assert f"CxrError: no image files in {tmp_path} (looked for .png, .jpg" in proc.stderr


def test_predict_scores_files_and_folders_as_validation_did(trained, tmp_path, capsys):
    cell, val, predictions = trained
    out = tmp_path / "out/scores.csv"
    main(["predict", "--cell", str(cell), str(val), "--out", str(out), "--batch-size", "3", "--device", "cpu"])
    assert f"scored {len(predictions)} images into {out}" in capsys.readouterr().out
    scores = pd.read_csv(out, dtype={"image": str})
    assert scores["image"].str.startswith(f"{val}/sub/").all()  # as given
    expect_validation_scores(scores, predictions, os.path.basename)


def test_every_encoding_of_a_picture_scores_alike_and_odd_names_stay_as_they_are(trained, tmp_path, capsys):
    cell, val, predictions = trained
    pixels = full_range(np.asarray(Image.open(next((val / "sub").iterdir()))))
    folder = tmp_path / "odd #name $dir"
    files = write_encodings(folder, pixels)
    odd = folder / "@ref#x $y.png"
    Image.fromarray(pixels).save(odd)
    Image.fromarray(255 - pixels).save(folder / "inverted.png")  # a different picture scores differently
    out = tmp_path / "scores.csv"
    main(["predict", "--cell", str(cell), str(folder), "--out", str(out)])
    scores = pd.read_csv(out).set_index("image")["score"]
    assert len(scores) == len(files) + 2
    reference = scores[str(files["png8.png"])]
    for path in [*files.values(), odd]:
        assert scores[str(path)] == pytest.approx(reference, abs=1e-6), path.name
    assert abs(scores[str(folder / "inverted.png")] - reference) > 1e-5


def test_bad_files_stop_predict_in_one_line_or_are_listed_with_skip_bad(trained, tmp_path, capsys):
    cell, val, predictions = trained
    bad = tmp_path / "in/broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in/small.png")  # below the cell's 16 px
    out = tmp_path / "scores.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--cell", str(cell), str(val), str(tmp_path / "in"), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"monai-cxr: error: cannot read image {bad}: ") and err.count("\n") == 1
    assert not out.exists()

    main(["predict", "--cell", str(cell), str(val), str(tmp_path / "in"), "--out", str(out), "--skip-bad"])
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"warning: skipped: {err[len('monai-cxr: error: ') :].strip()}",
        f"warning: skipped: image {tmp_path}/in/small.png: the image is 8 px after making it square, smaller "
        "than the 16 px this cell was trained at",
    ]
    assert f"scored {len(predictions)} images into {out}; skipped 2 files (listed above)" in captured.out
    expect_validation_scores(pd.read_csv(out, dtype={"image": str}), predictions, os.path.basename)
