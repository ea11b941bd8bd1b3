"""Inference on image files, without a trained network: the transforms reproduce the cache, DICOM reads like a
16-bit PNG, files are found as documented, and the bundle's inference.json is a valid MONAI inference workflow."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_GRID
from inference_files import full_range, write_dicom, write_encodings
from PIL import Image
from table_layout import write_table

from monai_cxr.cell.inference import (
    AreaResize,
    ImageDataset,
    LoadRadiographd,
    MakeSquared,
    find_images,
    read_radiograph,
)
from monai_cxr.cli import main
from monai_cxr.data.cache import open_cache
from monai_cxr.data.prepare import TableOptions, prepare
from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import GridSettings, generate, template_dir


def parsed(config_file, key, **overrides):
    """``key`` of a cell's config (train.json completed by its override.json), with the cell as bundle_root."""
    from monai.bundle import ConfigParser

    cell = Path(config_file).parent.parent
    train = Path(config_file).name == "train.json"
    files = [str(config_file)] + ([str(cell / "configs/override.json")] if train else [])
    parser = ConfigParser()
    parser.read_config(files)
    parser.update({"bundle_root": str(cell), **overrides})
    return parser.get_parsed_content(key)


def test_the_bundles_preprocessing_of_a_file_equals_training_input_from_its_cache_row(study_copy):
    """Every image of the study, read from its file by inference.json, is what validation fed the network from
    the cache (CacheBatchDataset + DevicePreprocess in train.json): the same uint8 pixels bit for bit, and the
    same z-scored floats (MONAI's NormalizeIntensityd on one image vs the batched normalisation)."""
    from monai.transforms import Compose

    from monai_cxr.cell.batches import CacheBatchDataset

    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    index = pd.read_csv(study_copy / "data/index.csv", dtype=str)
    infer = parsed(cell / "configs/inference.json", "preprocessing")
    to_uint8 = Compose(infer.transforms[:3])  # load, make square, area resize: the cache row's pixels
    prepare_batch = parsed(cell / "configs/train.json", "validate#prepare_batch")
    assert not prepare_batch.augments
    rows = [{"image": row, "label": [0]} for row in range(len(index))]
    batch = CacheBatchDataset(parsed(cell / "configs/train.json", "cache_file"), rows)[list(range(len(rows)))]
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (len(index), 1, 16, 16)
    from_cache, _ = prepare_batch(batch, torch.device("cpu"))
    for row, path in enumerate(index["path"]):
        pixels = np.asarray(to_uint8({"image": path})["image"])
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, batch["image"][row].numpy()), path
        from_file = infer({"image": path, "name": "x"})["image"]
        assert from_file.shape == (1, 16, 16) and from_file.dtype == from_cache.dtype
        np.testing.assert_allclose(from_file.numpy(), from_cache[row].numpy(), atol=1e-5, err_msg=path)


@pytest.mark.parametrize("square", ["pad", "crop"])
def test_non_square_images_are_made_square_as_the_study_did(tmp_path, square):
    write_table(tmp_path)  # images 24 x 24 and 24 x 28
    options = TableOptions(
        table=str(tmp_path / "tables/study.csv"),
        path_col="file",
        patient_col="subject",
        label_cols=["Effusion", "Nodule"],
    )
    prepare("csv", None, tmp_path / "s", [8, 24], table=options, square=square, workers=1, progress=False)
    index = pd.read_csv(tmp_path / "s/data/index.csv", dtype=str)
    assert json.loads((tmp_path / "s/study.json").read_text())["data"]["square"] == square
    load, make_square = LoadRadiographd("image"), MakeSquared("image", policy=square)
    for r in (8, 24):
        cache = open_cache(tmp_path / "s/data/cache", r)
        for row, path in enumerate(index["path"]):
            image = AreaResize(r)(make_square(load({"image": path}))["image"])
            assert image.dtype == np.uint8 and np.array_equal(image[0], cache[row]), (square, r, path)
    assert any(np.asarray(Image.open(p)).shape[0] != np.asarray(Image.open(p)).shape[1] for p in index["path"])


def test_generate_fills_the_studys_square_policy_into_inference_json(study_copy):
    study = json.loads((study_copy / "study.json").read_text())
    study["data"]["square"] = "crop"
    (study_copy / "study.json").write_text(json.dumps(study))
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[32], **TINY_GRID))
    config = json.loads((cell / "configs/inference.json").read_text())
    assert config["square"] == "crop" and config["resolution"] == 32
    assert config["network_def"]["_target_"] == "monai.networks.nets.resnet34"


def test_inference_json_is_an_infer_workflow_with_paths_relative_to_bundle_root(study_copy):
    from monai.bundle import ConfigWorkflow

    template = json.loads((template_dir() / "configs/inference.json").read_text())
    strings = []

    def walk(value):
        if isinstance(value, dict):
            [walk(v) for v in value.values()]
        elif isinstance(value, list):
            [walk(v) for v in value]
        elif isinstance(value, str):
            strings.append(value)

    walk(template)
    assert template["bundle_root"] == "." and not [s for s in strings if s.startswith("/")]
    assert template["ckpt_dir"] == "$@bundle_root + '/models'" and template["output_dir"].startswith("$@bundle_root +")
    assert template["dataset_dir"] == "$@output_dir + '/images'"
    assert template["scores_file"] == "$@output_dir + '/scores.csv'"
    assert all(isinstance(template[k], (int, str, dict)) for k in ("resolution", "square", "network_def"))

    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    # a fresh cell: no model and no inference/images yet, still a complete workflow
    workflow = ConfigWorkflow(
        config_file=str(cell / "configs/inference.json"), workflow_type="infer", logging_file=False
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.dataset_dir == "./inference/images"  # relative: the study can move


def test_dicom_reads_like_a_16_bit_png(tmp_path):
    pixels = full_range(np.random.default_rng(1).integers(30, 200, (20, 26), dtype=np.uint8))
    files = write_encodings(tmp_path, pixels)
    for name, path in files.items():
        assert np.array_equal(read_radiograph(path), pixels), name
    # 8-bit DICOM is taken as it is, as 8-bit PNGs are: no min-max stretch
    narrow = np.random.default_rng(2).integers(30, 200, (20, 26), dtype=np.uint8)
    assert np.array_equal(read_radiograph(write_dicom(tmp_path / "eight.dcm", narrow)), narrow)
    assert np.array_equal(read_radiograph(write_dicom(tmp_path / "eight1.dcm", narrow, "MONOCHROME1")), 255 - narrow)
    rgb = np.stack([narrow, 255 - narrow, narrow // 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(
        read_radiograph(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")), read_radiograph(tmp_path / "rgb.png")
    )


def test_bad_dicom_and_missing_pydicom_are_one_line_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(CxrError, match=f"cannot read image {bad}: "):
        read_radiograph(bad)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if the dicom extra were not installed
    with pytest.raises(CxrError, match=r"reading DICOM needs pydicom: pip install 'monai-cxr\[dicom\]'"):
        read_radiograph(bad)


def test_folders_are_searched_recursively_in_sorted_order(tmp_path):
    pixels = full_range(np.zeros((8, 8), np.uint8))
    for name in ("b.png", "a/z.jpg", "a/y.nii.gz", "c/d/e.dcm", "c/scan.1.2.3", ".hidden/x.png", "a/.x.png"):
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith((".dcm", ".3")):
            write_dicom(path, pixels)
        else:
            path.write_bytes(b"image")
    (tmp_path / "in/notes.txt").write_text("not an image")
    found = find_images(tmp_path / "in")
    assert [e["name"] for e in found] == ["a/y.nii.gz", "a/z.jpg", "b.png", "c/d/e.dcm", "c/scan.1.2.3"]
    assert found[2]["image"] == str(tmp_path / "in/b.png")
    # several inputs (the CLI): names as given; a file named directly is taken; a file reached twice once
    given = [str(tmp_path / "in/c"), str(tmp_path / "in/notes.txt"), str(tmp_path / "in/c/d/e.dcm")]
    assert [e["name"] for e in find_images(given)] == [
        f"{tmp_path}/in/c/d/e.dcm",
        f"{tmp_path}/in/c/scan.1.2.3",
        f"{tmp_path}/in/notes.txt",
    ]


def test_finding_nothing_names_the_folder_and_the_suffixes(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("x")
    with pytest.raises(CxrError, match=rf"no image files in {tmp_path}/empty \(looked for .png, .jpg, .*\.dcm"):
        find_images(tmp_path / "empty")
    with pytest.raises(CxrError, match=f"{tmp_path}/absent does not exist"):
        find_images([tmp_path / "absent"])
    assert find_images(tmp_path / "absent", allow_empty=True) == []
    assert find_images(str(tmp_path / "empty"), allow_empty=True) == []


def test_a_bad_or_too_small_file_stops_with_its_name_or_is_marked_with_skip_bad(study_copy, tmp_path):
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[32], **TINY_GRID))
    preprocessing = parsed(cell / "configs/inference.json", "preprocessing")
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "small.png")  # 40 px after padding: enough
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "tiny.png")  # 24 px after padding
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    data = find_images(tmp_path)
    assert [e["name"] for e in data] == ["broken.png", "small.png", "tiny.png"]
    dataset = ImageDataset(data, preprocessing)
    with pytest.raises(CxrError, match=f"cannot read image {tmp_path}/broken.png: "):
        dataset[0]
    assert dataset[1]["image"].shape == (1, 32, 32) and dataset[1]["error"] == ""
    with pytest.raises(
        CxrError,
        match=f"image {tmp_path}/tiny.png: the image is 24 px after making it square, "
        "smaller than the 32 px this cell was trained at",
    ):
        dataset[2]
    marked = ImageDataset(data, preprocessing, skip_bad=True, resolution=32)
    assert marked[0]["error"].startswith(f"cannot read image {tmp_path}/broken.png")
    assert marked[0]["image"].shape == (1, 32, 32) and marked[0]["name"] == "broken.png"
    assert marked[2]["error"].startswith(f"image {tmp_path}/tiny.png: the image is 24 px")
    assert ImageDataset(data, preprocessing, skip_bad="True").skip_bad is True  # as `--skip_bad True` gives it
    with pytest.raises(CxrError, match="skip_bad must be true or false, not 'maybe'"):
        ImageDataset(data, preprocessing, skip_bad="maybe")


def _non_finite_files(folder: Path) -> dict[str, Path]:
    """A float NIfTI with a NaN and a float TIFF (PIL mode 'F') with an Inf, both otherwise fine 40 x 40 images."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.linspace(0.0, 1.0, 40 * 40, dtype=np.float32).reshape(40, 40)
    with_nan, with_inf = pixels.copy(), pixels.copy()
    with_nan[3, 5], with_inf[7, 2] = np.nan, np.inf
    nib.save(nib.Nifti1Image(with_nan.T, np.eye(4)), folder / "nan.nii.gz")
    Image.fromarray(with_inf, mode="F").save(folder / "inf.tif")
    Image.fromarray(pixels, mode="F").save(folder / "finite.tif")
    return {"nan": folder / "nan.nii.gz", "inf": folder / "inf.tif", "finite": folder / "finite.tif"}


def test_non_finite_pixels_stop_predict_naming_the_file_or_are_marked_with_skip_bad(study_copy, tmp_path):
    """NaN/Inf used to min-max scale into an all-NaN image that cast to black, and was scored as such."""
    files = _non_finite_files(tmp_path / "in")
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[32], **TINY_GRID))
    preprocessing = parsed(cell / "configs/inference.json", "preprocessing")
    data = find_images(tmp_path / "in")
    assert [e["name"] for e in data] == ["finite.tif", "inf.tif", "nan.nii.gz"]
    dataset = ImageDataset(data, preprocessing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leaked "invalid value encountered in cast"
        for path, count in ((files["inf"], 1), (files["nan"], 1)):
            with pytest.raises(CxrError) as info:
                read_radiograph(path)
            assert str(info.value) == (
                f"image {path} has non-finite pixel values (NaN or Inf) in {count} of 1600 pixels; "
                "only finite values can be scaled to 8-bit grey"
            )
        with pytest.raises(CxrError, match=f"^image {tmp_path}/in/inf.tif has non-finite pixel values"):
            dataset[1]
        with pytest.raises(CxrError, match=f"^image {tmp_path}/in/nan.nii.gz has non-finite pixel values"):
            dataset[2]
        finite = dataset[0]
        assert finite["error"] == "" and float(finite["image"].std()) > 0  # a float TIFF without NaN still reads
        marked = ImageDataset(data, preprocessing, skip_bad=True, resolution=32)
        assert marked[0]["error"] == ""
        assert marked[1]["error"].startswith(f"image {tmp_path}/in/inf.tif has non-finite pixel values (NaN or Inf)")
        assert marked[2]["error"].startswith(f"image {tmp_path}/in/nan.nii.gz has non-finite pixel values")


def test_predict_refuses_a_cell_without_a_model_in_one_line(study_copy, tmp_path, capsys):
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--cell", str(cell), str(tmp_path), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert (
        err == f"monai-cxr: error: cell {cell} has no trained model (models/model.pt); run it first with "
        "`monai-cxr run`\n"
    )
    assert not (tmp_path / "s.csv").exists()


def test_predict_refuses_an_inference_json_that_cannot_score_files(study_copy, tmp_path, capsys):
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    (cell / "models").mkdir()
    (cell / "models/model.pt").write_bytes(b"")
    config = json.loads((cell / "configs/inference.json").read_text())
    del config["score_saver"]  # as the cache-row inference.json of earlier versions
    (cell / "configs/inference.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--cell", str(cell), str(tmp_path), "--out", str(tmp_path / "s.csv")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"monai-cxr: error: {cell}/configs/inference.json cannot score image files "
        "(written by an older monai-cxr); generate the cell again\n"
    )


@pytest.mark.parametrize("out", ["a.png", "b.PNG", "c.nii.gz", "d.dcm", "x.csv"])
def test_predict_never_writes_its_scores_over_an_image(study_copy, tmp_path, capsys, out):
    """Over an image named as the output, or over one of the inputs (here x.csv, passed as an input)."""
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    for name in ("a.png", "x.csv"):
        (tmp_path / name).write_bytes(b"the user's file")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "predict",
                "--cell",
                str(cell),
                str(tmp_path / "a.png"),
                str(tmp_path / "x.csv"),
                "--out",
                str(tmp_path / out),
            ]
        )
    assert exit_info.value.code == 2
    why = "is one of the inputs" if out == "x.csv" else "names an image file"
    assert capsys.readouterr().err.startswith(f"monai-cxr: error: --out {tmp_path / out} {why}")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "x.csv").read_bytes() == b"the user's file"


def test_float_pixels_of_any_finite_range_scale_to_the_full_grey_range():
    """Min-max scaling once computed max - min, which overflows to Inf beyond 1.8e308 and made the image black."""
    from monai_cxr.data.images import to_uint8

    for low, high in ((-1e308, 1e308), (0.0, 1.0), (-3.0, 5.0), (1e-300, 3e-300)):
        pixels = np.array([[low, 0.75 * low + 0.25 * high], [high, high]], dtype=np.float64)  # a quarter: 63.75
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow warning either
            assert to_uint8(pixels).tolist() == [[0, 64], [255, 255]], (low, high)
    assert to_uint8(np.full((2, 2), 7.5)).tolist() == [[0, 0], [0, 0]]  # a flat image
