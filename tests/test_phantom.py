"""The phantom: NIH layout exactly, determinism, findings of known size, prevalence, errors."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from monai_cxr.cli import main
from monai_cxr.data.phantom import (
    LABELS,
    ImageSpec,
    parse_prevalence,
    plan,
    render_image,
    resolve_prevalence,
    synthesize,
)
from monai_cxr.data.phantom.anatomy import AP_MAGNIFICATION, draw_patient, image_anatomy
from monai_cxr.errors import CxrError

NIH_LABELS = {
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
}
HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    summary = synthesize(out, patients=12, size=64, seed=7, workers=1)
    return out, summary


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(phantom, tmp_path):
    out, _ = phantom
    synthesize(tmp_path / "b", patients=12, size=64, seed=7, workers=3)
    assert _files(out) == _files(tmp_path / "b")
    synthesize(tmp_path / "c", patients=12, size=64, seed=8, workers=1)
    other = _files(tmp_path / "c")
    assert other["images/00000001_000.png"] != _files(out)["images/00000001_000.png"]


def test_csv_is_nih_data_entry_format(phantom):
    out, _ = phantom
    lines = (out / "Data_Entry_2017.csv").read_text().splitlines()
    assert lines[0] == HEADER
    for line in lines[1:]:
        assert line.count(",") == 10, line  # 11 fields, as in the real file
        assert re.fullmatch(r"\d{8}_\d{3}\.png,[A-Za-z_| ]+,\d+,\d+,\d+,[MF],(PA|AP),64,64,\d\.\d{3},\d\.\d{3}", line)
    table = pd.read_csv(out / "Data_Entry_2017.csv")
    assert list(table.columns) == [
        "Image Index",
        "Finding Labels",
        "Follow-up #",
        "Patient ID",
        "Patient Age",
        "Patient Gender",
        "View Position",
        "OriginalImage[Width",
        "Height]",
        "OriginalImagePixelSpacing[x",
        "y]",
    ]
    assert table["Image Index"].is_unique
    for ids, pid, fu in zip(table["Image Index"], table["Patient ID"], table["Follow-up #"]):
        assert ids == f"{pid:08d}_{fu:03d}.png"
    for labels in table["Finding Labels"]:
        parts = labels.split("|")
        assert labels == "No Finding" or (set(parts) <= NIH_LABELS and len(set(parts)) == len(parts))
    follow = table.groupby("Patient ID")["Follow-up #"].apply(sorted)
    assert all(f == list(range(len(f))) and 1 <= len(f) <= 4 for f in follow)
    assert follow.apply(len).max() > 1
    assert set(table["View Position"]) == {"PA", "AP"}


def test_images_are_8bit_grayscale_and_match_render_image(phantom):
    out, _ = phantom
    table = pd.read_csv(out / "Data_Entry_2017.csv")
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(table["Image Index"])
    specs = plan(12, seed=7)
    for spec in specs[:3]:
        with Image.open(out / "images" / spec.image_id) as img:
            assert img.mode == "L" and img.size == (64, 64)
            pixels = np.asarray(img)
        np.testing.assert_array_equal(pixels, render_image(spec, 64, seed=7)[0])
        assert pixels.std() > 10  # an image, not a blank


def test_list_files_split_by_patient(phantom):
    out, _ = phantom
    train = (out / "train_val_list.txt").read_text().split()
    test = (out / "test_list.txt").read_text().split()
    table = pd.read_csv(out / "Data_Entry_2017.csv")
    assert sorted(train + test) == sorted(table["Image Index"])
    patients = lambda ids: {i.split("_")[0] for i in ids}
    assert train and test and not patients(train) & patients(test)
    assert len(patients(test)) == round(0.2 * 12)


def test_phantom_card_says_synthetic(phantom):
    out, summary = phantom
    card = (out / "PHANTOM.md").read_text()
    assert "synthetic" in card.lower() and "seed: 7" in card
    for label in LABELS:
        assert f"| {label} |" in card
    assert "SYNTHETIC" in summary


def _with_labels(spec: ImageSpec, *labels, view="PA"):
    return dataclasses.replace(spec, labels=tuple(labels), view=view)


def test_finding_sizes_by_construction():
    specs = plan(30, seed=1)
    nodules, masses = [], []
    for spec in specs[:25]:
        _, records = render_image(_with_labels(spec, "Mass", "Nodule"), 128, seed=1)
        nodules += [r for r in records if r["finding"] == "Nodule"]
        masses += [r for r in records if r["finding"] == "Mass"]
    assert len(masses) == 25 and len(nodules) > 25
    assert all(0.01 <= r["fraction"] <= 0.02 for r in nodules)
    assert all(r["fraction"] >= 0.06 for r in masses)
    assert all(1.28 <= r["width_px"] <= 2.56 for r in nodules)  # 1-2 % of 128 px


def test_a_finding_changes_only_its_own_pixels():
    """Findings draw from their own random streams, so adding one leaves the rest of the image alone."""
    spec = plan(3, seed=2)[0]
    plain, _ = render_image(_with_labels(spec), 128, seed=2)
    with_nodule, records = render_image(_with_labels(spec, "Nodule"), 128, seed=2)
    changed = np.argwhere(plain != with_nodule)
    assert len(changed)
    for y, x in changed:
        assert any(math.hypot(x + 0.5 - r["x"], y + 0.5 - r["y"]) <= r["width_px"] / 2 + 1.5 for r in records)
    for r in records:  # brighter at every centre
        assert int(with_nodule[int(r["y"]), int(r["x"])]) > int(plain[int(r["y"]), int(r["x"])])


def test_cardiomegaly_heart_wider_than_half_the_thorax():
    for spec in plan(10, seed=3):
        _, records = render_image(_with_labels(spec, "Cardiomegaly"), 64, seed=3)
        assert records[0]["ctr"] > 0.5


def test_anatomy_varies_between_patients_more_than_between_follow_ups():
    specs = [s for s in plan(20, seed=4, prevalence=0.0) if s.followup < 2]
    images = {(s.patient_id, s.followup): render_image(_with_labels(s), 64, seed=4)[0].astype(float) for s in specs}
    pids = sorted({p for p, f in images if (p, 1) in images})
    within = np.mean([np.abs(images[p, 0] - images[p, 1]).mean() for p in pids])
    between = np.mean([np.abs(images[p, 0] - images[q, 0]).mean() for p, q in zip(pids, pids[1:])])
    assert 0 < within < between


def test_ap_view_is_magnified():
    rng = lambda: np.random.default_rng(5)
    patient = draw_patient(rng(), male=True)
    pa, ap = image_anatomy(patient, rng(), "PA"), image_anatomy(patient, rng(), "AP")
    assert ap.thorax == pytest.approx(pa.thorax * AP_MAGNIFICATION)
    assert ap.ctr > pa.ctr


def test_prevalence_roughly_honoured():
    specs = plan(1500, seed=0, prevalence={"Nodule": 0.1, "Mass": 0.5})
    frac = {label: np.mean([label in s.labels for s in specs]) for label in LABELS}
    assert frac["Nodule"] == pytest.approx(0.1, abs=0.03)
    assert frac["Mass"] == pytest.approx(0.5, abs=0.03)
    assert frac["Hernia"] == pytest.approx(0.25, abs=0.03)
    assert all(not s.labels for s in plan(50, prevalence=0.0))
    assert all(len(s.labels) == len(LABELS) for s in plan(50, prevalence=1.0))


@pytest.mark.parametrize(
    "bad, named",
    [
        (1.5, "1.5"),
        (-0.1, "-0.1"),
        (float("nan"), "nan"),
        (True, "True"),
        ("0.2", "'0.2'"),
        ({"Nodul": 0.2}, "Nodul"),
        ({"Mass": 2}, "Mass=2"),
        ({"Pneumonia": 0.1}, "Pneumonia"),
    ],
)
def test_bad_prevalence_is_a_cxr_error_naming_it(bad, named):
    with pytest.raises(CxrError, match=re.escape(named)):
        resolve_prevalence(bad)


def test_prevalence_option_text():
    assert parse_prevalence("0.3") == 0.3
    assert parse_prevalence("Nodule=0.3, Mass=0.2") == {"Nodule": 0.3, "Mass": 0.2}
    assert parse_prevalence(None) is None
    for bad in ("lots", "Nodule=high", "Nodule"):
        with pytest.raises(CxrError, match=re.escape(bad)):
            parse_prevalence(bad)
    with pytest.raises(CxrError, match="prevalence of 'Mass' is given twice in 'Mass=0.3, Mass=0.5'"):
        parse_prevalence("Mass=0.3, Mass=0.5")  # not the last one silently


def test_cli_synth_and_its_errors(tmp_path, capsys):
    main(["synth", str(tmp_path / "d"), "--patients", "2", "--size", "48", "--prevalence", "Mass=1", "--workers", "1"])
    assert "SYNTHETIC" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "d" / "Data_Entry_2017.csv")
    assert table["Finding Labels"].str.contains("Mass").all()
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "e"), "--patients", "2", "--size", "48", "--prevalence", "Nodule=1.2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Nodule=1.2" in err


def test_findings_file_matches_labels(phantom):
    out, _ = phantom
    labels = pd.read_csv(out / "Data_Entry_2017.csv").set_index("Image Index")["Finding Labels"]
    drawn = pd.read_csv(out / "phantom_findings.csv")
    assert len(drawn)
    for image_id, finding in zip(drawn["image_id"], drawn["finding"]):
        assert finding in labels[image_id].split("|")


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"patients": 0}, "patients"),
        ({"size": 8}, "size"),
        ({"workers": -1}, "workers"),
        ({"patients": 2.5}, "patients"),
    ],
)
def test_bad_settings_are_cxr_errors(tmp_path, kwargs, named):
    with pytest.raises(CxrError, match=named):
        synthesize(tmp_path / "x", **{"patients": 2, "size": 32, **kwargs})


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(CxrError, match="not a folder"):
        synthesize(tmp_path / "f", patients=1, size=32)
