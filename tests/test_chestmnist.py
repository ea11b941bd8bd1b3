"""The ChestMNIST source: index from the .npz files, the official split, a cache taken from the
file of each size or area-resized from the largest, and one-line errors for broken files."""

import json

import numpy as np
import pandas as pd
import pytest
from chestmnist_layout import SIZES, npz_name, write_chestmnist

from monai_cxr.data import cache as cache_mod
from monai_cxr.data.cache import build_cache, open_cache
from monai_cxr.data.prepare import prepare
from monai_cxr.data.sources.chestmnist import FILE_ORDER, NpzImages, read_chestmnist
from monai_cxr.errors import CxrError

NIH_NAMES = {"Effusion", "Pleural_Thickening", "Atelectasis", "Hernia"}


def test_index_rows_labels_and_references(tmp_path):
    arrays = write_chestmnist(tmp_path, sides=(28, 64))
    index, files = read_chestmnist(tmp_path)
    assert sorted(files) == [28, 64]
    assert list(index.columns[4:]) == list(FILE_ORDER) and set(index.columns) >= NIH_NAMES
    assert len(index) == sum(SIZES.values())
    assert index["image_id"].iloc[[0, 10, 14]].tolist() == ["train_00000", "val_00000", "test_00000"]
    assert (index["patient_id"] == index["image_id"]).all()
    assert index["path"].iloc[12] == f"{(tmp_path / 'chestmnist_64.npz').resolve()}#val/2"
    expected = np.concatenate([arrays[f"{s}_labels"] for s in ("train", "val", "test")])
    np.testing.assert_array_equal(index[list(FILE_ORDER)].to_numpy(), expected)


@pytest.mark.parametrize("compressed", [True, False])
def test_cache_copies_each_size_and_resizes_from_the_largest(tmp_path, monkeypatch, compressed, log_lines):
    monkeypatch.setattr(cache_mod, "CHUNK", 3)  # chunks straddle the train/val/test boundaries
    write_chestmnist(tmp_path / "mn", sides=(28, 64), compressed=compressed)
    messages = log_lines
    prepare("chestmnist", tmp_path / "mn", tmp_path / "s", [16, 28, 64], progress=False)
    index = pd.read_csv(tmp_path / "s/data/index.csv")
    split = pd.read_csv(tmp_path / "s/data/split.csv")
    assert split["fold"].value_counts().to_dict() == SIZES
    assert split["fold"].tolist() == [i.split("_")[0] for i in index["image_id"]]
    cache = tmp_path / "s/data/cache"
    for side in (28, 64):
        with np.load(tmp_path / "mn" / npz_name(side)) as npz:
            stacked = np.concatenate([npz[f"{s}_images"] for s in ("train", "val", "test")])
        np.testing.assert_array_equal(open_cache(cache, side), stacked)
    resized = np.rint(stacked.astype(float).reshape(-1, 16, 4, 16, 4).mean(axis=(2, 4)))  # 4x4 block means
    np.testing.assert_array_equal(open_cache(cache, 16), resized)  # from the 64 px file, not the 28
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["origin"] == {
        "16": "area-resized from chestmnist_64.npz (64 px)",
        "28": "copied from chestmnist.npz",
        "64": "copied from chestmnist_64.npz",
    }
    assert "cache: 16 px area-resized from chestmnist_64.npz (64 px)" in messages
    study = json.loads((tmp_path / "s/study.json").read_text())["data"]
    assert study["split"] == "official" and "no patient ids" in study["notes"][0]
    assert sorted(study["files"]) == ["28", "64"]


def test_a_single_file_is_the_only_source(tmp_path):
    write_chestmnist(tmp_path, sides=(28, 64))
    prepare("chestmnist", tmp_path / "chestmnist_64.npz", tmp_path / "s", [28], progress=False)
    manifest = json.loads((tmp_path / "s/data/cache/manifest.json").read_text())
    assert manifest["origin"] == {"28": "area-resized from chestmnist_64.npz (64 px)"}
    # the index alone (no explicit files) names the same source
    index = pd.read_csv(tmp_path / "s/data/index.csv")
    source = NpzImages.from_references(index["path"])
    assert isinstance(source, NpzImages) and source.files == {64: str(tmp_path / "chestmnist_64.npz")}


def test_resolution_above_the_largest_file_is_refused(tmp_path):
    write_chestmnist(tmp_path, sides=(28, 64))
    index, files = read_chestmnist(tmp_path)
    with pytest.raises(
        CxrError,
        match=r"resolution 128 exceeds the largest ChestMNIST file "
        r"\(chestmnist_64.npz, 64 px\); available sizes: 28, 64",
    ):
        build_cache(
            index, tmp_path / "c", [32, 128], images=NpzImages.from_references(index["path"], files), progress=False
        )


def _replace_npz(path, **changes):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda p: _replace_npz(p / "chestmnist_64.npz", val_images=None), "chestmnist_64.npz lacks key.*val_images"),
        (
            lambda p: _replace_npz(p / "chestmnist_64.npz", test_images=np.zeros((5, 28, 28), np.uint8)),
            "mixes image sizes",
        ),
        (
            lambda p: _replace_npz(p / "chestmnist_64.npz", train_images=np.zeros((10, 64, 64, 3), np.uint8)),
            "colour MedMNIST file is not ChestMNIST",
        ),
        (lambda p: _replace_npz(p / "chestmnist_64.npz", train_labels=np.zeros((10, 13), np.uint8)), "expected"),
        (
            lambda p: _replace_npz(
                p / "chestmnist.npz",
                val_images=np.zeros((4, 64, 64), np.uint8),
                train_images=np.zeros((10, 64, 64), np.uint8),
                test_images=np.zeros((5, 64, 64), np.uint8),
            ),
            "not the 28 px its name says",
        ),
        (
            lambda p: _replace_npz(
                p / "chestmnist.npz", val_images=np.zeros((3, 28, 28), np.uint8), val_labels=np.zeros((3, 14), np.uint8)
            ),
            "not from one release",
        ),
        (lambda p: _replace_npz(p / "chestmnist.npz", val_labels=np.ones((4, 14), np.uint8)), "disagree on val_labels"),
        (
            lambda p: _replace_npz(p / "chestmnist.npz", val_labels=np.full((4, 14), 2, np.uint8)),
            r"val_labels row 0 column 'Atelectasis' holds 2",
        ),
        (lambda p: (p / "chestmnist_64.npz").write_bytes(b"not a zip"), "cannot read .* as an .npz"),
        (
            lambda p: _replace_npz(p / "chestmnist.npz", val_labels=np.array([[None] * 14] * 4, dtype=object)),
            "cannot read val_labels",
        ),
    ],
)
def test_broken_files_are_one_clear_error(tmp_path, change, message):
    write_chestmnist(tmp_path, sides=(28, 64))
    change(tmp_path)
    with pytest.raises(CxrError, match=message):
        read_chestmnist(tmp_path)


def test_bad_choices_for_chestmnist(tmp_path):
    write_chestmnist(tmp_path / "d", sides=(28,))
    with pytest.raises(CxrError, match="no patient ids.*--split official"):
        prepare("chestmnist", tmp_path / "d", tmp_path / "s", [16], split="random", cache=False)
    with pytest.raises(CxrError, match="no view information"):
        prepare("chestmnist", tmp_path / "d", tmp_path / "s", [16], view="lateral", cache=False)
    with pytest.raises(CxrError, match="does not exist"):
        read_chestmnist(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrError, match=r"no chestmnist\*.npz file"):
        read_chestmnist(tmp_path / "empty")
