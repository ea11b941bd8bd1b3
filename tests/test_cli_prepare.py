"""`monai-cxr prepare` end to end, and its one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from nih_layout import write_release

from monai_cxr.cli import main


def run_cli(*args):
    """Run the installed console entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", "from monai_cxr.cli import main; main()", *args], capture_output=True, text=True
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_prepare_writes_index_split_cache_and_study(tmp_path):
    write_release(tmp_path / "nih", patients=15, layout="nested")
    main(
        [
            "prepare",
            "--data-dir",
            str(tmp_path / "nih"),
            "--study-dir",
            str(tmp_path / "s"),
            "--resolutions",
            "32,16",
            "--split",
            "official",
            "--workers",
            "1",
        ]
    )
    index = pd.read_csv(tmp_path / "s/data/index.csv")
    split = pd.read_csv(tmp_path / "s/data/split.csv")
    assert split["image_id"].tolist() == index["image_id"].tolist()
    assert set(split["fold"]) == {"train", "val", "test"}
    assert np.load(tmp_path / "s/data/cache/r16.npy").shape == (len(index), 16, 16)
    study = json.loads((tmp_path / "s/study.json").read_text())
    assert study["data"]["resolutions"] == [16, 32] and study["data"]["split"] == "official"
    assert study["synthetic"] is False and "numpy" in study["versions"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--resolutions", "0,32"], "0 is not a positive integer"),
        (["--resolutions", "32,big"], "'big' is not an integer"),
        (["--resolutions", "96"], "resolution 96 exceeds the source size"),
        (["--data-dir", "/nonexistent/nih"], "does not exist"),
        (["--data-dir", "nih/Data_Entry_2017.csv"], "Data_Entry_2017.csv' is a file, not a folder"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    write_release(tmp_path / "nih", patients=10)
    base = ["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(tmp_path / "s"), "--workers", "1"]
    args = [str(tmp_path / a) if a.startswith("nih/") else a for a in args]
    code, out, err = run_cli(*base, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    # one line in one format, whether click refused the value or monai-cxr did
    assert err.startswith("monai-cxr: error: ") and err.count("\n") == 1


def test_labels_without_positives_are_named_in_one_line(tmp_path, log_lines):
    write_release(tmp_path / "nih", patients=10)  # its findings never include e.g. Pneumonia
    messages = log_lines
    from monai_cxr.data.prepare import prepare

    prepare(dataset="nih", data_dir=tmp_path / "nih", study_dir=tmp_path / "s", resolutions=[16], cache=False)
    notes = [m for m in messages if "cannot be studied" in m]
    assert len(notes) == 1 and "Pneumonia" in notes[0] and "Mass" not in notes[0].split(":")[-1]


def test_bad_cache_settings_are_refused_before_anything_is_written(tmp_path):
    from monai_cxr.data.prepare import prepare
    from monai_cxr.errors import CxrError

    write_release(tmp_path / "nih", patients=5)
    for kwargs, message in (
        ({"resolutions": [0, 16]}, "not a positive integer"),
        ({"resolutions": [16], "square": "stretch"}, "square policy 'stretch'"),
    ):
        with pytest.raises(CxrError, match=message):
            prepare(dataset="nih", data_dir=tmp_path / "nih", study_dir=tmp_path / "s", **kwargs)
        assert not (tmp_path / "s").exists()


def test_no_cache_flag_skips_the_cache(tmp_path):
    write_release(tmp_path / "nih", patients=6)
    main(["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(tmp_path / "s"), "--no-cache"])
    assert (tmp_path / "s/data/split.csv").is_file() and not (tmp_path / "s/data/cache").exists()


def test_no_cache_over_a_cache_of_other_images_removes_it_and_keeps_one_of_the_same(tmp_path):
    from monai_cxr.data.cache import complete_resolutions

    write_release(tmp_path / "a", patients=6)
    write_release(tmp_path / "b", patients=8)
    study, cache = tmp_path / "s", tmp_path / "s/data/cache"
    main(["prepare", "--data-dir", str(tmp_path / "a"), "--study-dir", str(study), "--resolutions", "16"])
    main(["prepare", "--data-dir", str(tmp_path / "a"), "--study-dir", str(study), "--no-cache", "--seed", "3"])
    assert complete_resolutions(cache) == [16]  # the same images, split anew: the cache still fits
    main(["prepare", "--data-dir", str(tmp_path / "b"), "--study-dir", str(study), "--no-cache"])
    # other images: the old rows would be paired with the new index.csv, so the cache goes
    assert complete_resolutions(cache) == [] and not list(cache.glob("r*.npy"))
    main(["prepare", "--data-dir", str(tmp_path / "b"), "--study-dir", str(study), "--resolutions", "16"])
    assert np.load(cache / "r16.npy").shape[0] == len(pd.read_csv(study / "data/index.csv"))


@pytest.mark.parametrize("text, message", [("[1, 2]", "must hold a JSON object"), ("{", "not valid JSON")])
def test_a_broken_study_json_is_one_line(tmp_path, text, message):
    from monai_cxr.errors import CxrError
    from monai_cxr.studydir import load_study

    (tmp_path / "study.json").write_text(text)
    with pytest.raises(CxrError, match=message):
        load_study(tmp_path)
