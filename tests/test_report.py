"""The study report on synthetic prediction files whose AUCs are known.

Expected numbers come from independent code here: scikit-learn's AUC, DeLong by the
O(m n) pairwise kernel, Holm as R's ``p.adjust``, accuracies by brute force.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_study, write_cell, write_study_json
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from monai_cxr.errors import CxrError
from monai_cxr.report import make_report
from monai_cxr.report.tables import add_holm, pairs_to_test, reference_for

RESOLUTIONS = (32, 64, 128, 320, 448)


def kernel_delong(y, scores):
    """AUCs and DeLong covariance from the pairwise kernel psi (DeLong et al. 1988)."""
    scores = np.atleast_2d(np.asarray(scores, float))
    y = np.asarray(y)
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / pos.shape[1] + np.atleast_2d(np.cov(v01)) / neg.shape[1]
    return psi.mean(axis=(1, 2)), cov


def r_holm(p):
    """R's p.adjust(p, "holm")."""
    p = np.asarray(p, float)
    order = np.argsort(p)
    adj = np.minimum(1, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adj)
    out[order] = adj
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A complete two-label, two-architecture study and its report (with TensorBoard)."""
    study = tmp_path_factory.mktemp("study")
    truth = make_study(study, labels=("Mass", "Nodule"), resolutions=RESOLUTIONS,
                       archs=("densenet121", "resnet34"), n=90)
    out = make_report(study)
    return study, truth, out


def test_summary_equals_independent_auc_delong_and_accuracy(full):
    study, truth, out = full
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(truth) == 20
    for _, row in summary.iterrows():
        y, s = truth[(row["label"], row["arch"], row["resolution"], row["seed"])]
        auc, cov = kernel_delong(y, s)
        se = math.sqrt(cov[0, 0])
        assert (row["n_pos"], row["n_neg"]) == (y.sum(), len(y) - y.sum())
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-7)
        assert row["auc"] == pytest.approx(auc[0], abs=1e-7)
        assert row["auc_se"] == pytest.approx(se, rel=1e-6)
        assert row["auc_ci_low"] == pytest.approx(max(0, auc[0] - 1.959964 * se), abs=1e-6)
        assert row["auc_ci_high"] == pytest.approx(min(1, auc[0] + 1.959964 * se), abs=1e-6)
        assert row["accuracy_050"] == pytest.approx(np.mean((s >= 0.5) == y), abs=1e-7)
        # Youden: the best sensitivity + specificity over all cut points, and its accuracy
        j = [np.mean(s[y == 1] >= t) - np.mean(s[y == 0] >= t) for t in s]
        best = s[int(np.argmax(j))]
        assert np.mean(s[y == 1] >= row["youden_threshold"]) - \
            np.mean(s[y == 0] >= row["youden_threshold"]) == pytest.approx(max(j))
        assert row["accuracy_youden"] == pytest.approx(np.mean((s >= best) == y), abs=1e-7)
        run = json.loads((study / "bundles" / f"{row['label'].lower()}__{row['arch']}__"
                          f"r{row['resolution']}__s0" / "run.json").read_text())
        for key in ("batch_size", "images_per_s", "peak_mem_mb", "train_seconds"):
            assert row[key] == pytest.approx(run[key])


def test_comparisons_are_paired_delong_with_holm_per_label(full):
    _, truth, out = full
    comp = pd.read_csv(out / "comparisons.csv")
    # every resolution vs 320, then neighbours not already tested: 64-128 and 32-64
    expected_pairs = {(32, 320, "reference"), (64, 320, "reference"), (128, 320, "reference"),
                      (448, 320, "reference"), (32, 64, "neighbour"), (64, 128, "neighbour")}
    for _, group in comp.groupby(["label", "arch", "seed"]):
        assert set(zip(group["resolution_a"], group["resolution_b"], group["kind"])) == \
            expected_pairs
    assert comp["paired"].all()
    for _, row in comp.iterrows():
        key = (row["label"], row["arch"])
        (y, sa), (_, sb) = truth[key + (row["resolution_a"], 0)], truth[key + (row["resolution_b"], 0)]
        auc, cov = kernel_delong(y, [sa, sb])
        diff_se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
        z = (auc[0] - auc[1]) / diff_se
        a1, a2 = auc
        ratio_se = math.sqrt(cov[0, 0] / a2**2 + a1**2 * cov[1, 1] / a2**4
                             - 2 * a1 * cov[0, 1] / a2**3)
        assert row["diff"] == pytest.approx(a1 - a2, abs=1e-7)
        assert row["diff_ci_low"] == pytest.approx(a1 - a2 - 1.959964 * diff_se, abs=1e-6)
        assert row["z"] == pytest.approx(z, rel=1e-5)
        assert row["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-5)
        assert row["ratio"] == pytest.approx(a1 / a2, rel=1e-7)
        assert row["ratio_se"] == pytest.approx(ratio_se, rel=1e-5)
    for label, group in comp.groupby("label"):  # the family: all tests of one label
        assert len(group) == 12
        np.testing.assert_allclose(group["p_holm"], r_holm(group["p_value"]), rtol=1e-6)


def test_holm_on_known_p_values_flows_into_p_holm():
    frame = pd.DataFrame({"label": ["A", "A", "A", "B", "B"],
                          "p_value": [0.01, 0.04, 0.03, 0.02, np.nan]})
    add_holm(frame)
    np.testing.assert_allclose(frame["p_holm"][:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(frame["p_holm"][4])


def test_reference_defaults_to_320_else_highest():
    assert reference_for([32, 64, 320, 448]) == 320
    assert reference_for([32, 64, 128]) == 128
    assert reference_for([32, 64, 128], requested=64) == 64
    assert pairs_to_test([32, 64, 128], 128) == [(32, 128, "reference"), (64, 128, "reference"),
                                                 (32, 64, "neighbour")]


def test_report_md_is_self_contained_and_says_synthetic(full):
    _, _, out = full
    text = (out / "report.md").read_text()
    head = text[:600].lower()
    assert "synthetic" in head
    links = re.findall(r"\]\((figures/[^)]+)\)", text)
    assert {Path(x).stem for x in links} == {"auc_vs_resolution", "auc_ratio", "architectures",
                                            "tradeoff"}
    for link in links:
        assert not Path(link).is_absolute() and (out / link).is_file()
    for svg in (out / "figures").glob("*.svg"):
        assert "synthetic phantom data" in svg.read_text()
    assert "**Mass** (densenet121, seed 0): best at" in text
    comp = pd.read_csv(out / "comparisons.csv")
    low = comp.query("label == 'Nodule' and arch == 'resnet34' and resolution_a == 32 "
                     "and kind == 'reference'").iloc[0]
    line = next(x for x in text.splitlines() if x.startswith("- **Nodule** (resnet34"))
    assert f"At 32 px it keeps {100 * low['ratio']:.1f}% ± {100 * low['ratio_se']:.1f} " \
        "of its AUC at 320 px" in line
    assert "Missing cells" not in text


def test_tensorboard_events_read_back(full):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, truth, out = full
    summary = pd.read_csv(out / "summary.csv")
    top = EventAccumulator(str(out / "tensorboard")).Reload()
    assert set(top.Tags()["images"]) == {f"figures/{n}" for n in
                                         ("auc_vs_resolution", "auc_ratio", "architectures",
                                          "tradeoff")}
    text = top.Tensors("summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "Nodule" in text and "AUC" in text
    curve = top.Scalars("auc/Mass/resnet34/s0")
    expected = summary.query("label == 'Mass' and arch == 'resnet34'")
    assert [e.step for e in curve] == list(expected["resolution"])
    np.testing.assert_allclose([e.value for e in curve], expected["auc"], rtol=1e-6)

    runs = sorted(p for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert len(runs) == len(truth)
    run = EventAccumulator(str(out / "tensorboard" / "Nodule__densenet121__r128__s0")).Reload()
    assert "_hparams_/session_start_info" in run.PluginTagToContent("hparams")
    row = summary.query("label == 'Nodule' and arch == 'densenet121' and resolution == 128")
    assert run.Scalars("hparam/auc")[0].value == pytest.approx(row["auc"].item(), rel=1e-6)
    assert run.Scalars("hparam/auc_se")[0].value == pytest.approx(row["auc_se"].item(), rel=1e-6)


def test_partial_study_lists_missing_cells(tmp_path):
    make_study(tmp_path, labels=("Edema",), resolutions=(64, 128), n=40)
    write_cell(tmp_path, "Edema", "resnet34", 256, 0, finished=False)
    out = make_report(tmp_path, tensorboard=False)
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["resolution"]) == [64, 128]
    comp = pd.read_csv(out / "comparisons.csv")
    assert list(zip(comp["resolution_a"], comp["resolution_b"])) == [(64, 128)]  # 128: highest
    text = (out / "report.md").read_text()
    assert "Partial study" in text and "## Missing cells" in text
    assert "`edema__resnet34__r256__s0`" in text and "no run.json" in text


def test_label_without_positives_is_reported_not_crashed(tmp_path):
    make_study(tmp_path, labels=("Mass",), resolutions=(64, 128), n=40, synthetic=False)
    settings = json.loads((tmp_path / "study.json").read_text())
    settings["data"]["notes"] = ["Uncertain labels were mapped to 1 (U-Ones)."]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    y0 = np.zeros(30, int)
    y1 = np.r_[1, np.zeros(29, int)]
    score = np.linspace(0, 1, 30)
    for r in (64, 128):
        write_cell(tmp_path, "Hernia", "resnet34", r, 0, y0, score)
        write_cell(tmp_path, "Pneumonia", "resnet34", r, 0, y1, score)
    out = make_report(tmp_path, tensorboard=False)
    summary = pd.read_csv(out / "summary.csv").set_index(["label", "resolution"])
    hernia = summary.loc[("Hernia", 64)]
    assert hernia["n_pos"] == 0 and math.isnan(hernia["auc"])
    assert "no positives" in hernia["note"]
    one = summary.loc[("Pneumonia", 64)]  # one positive: an AUC, but no DeLong SE
    assert one["auc"] == pytest.approx(roc_auc_score(y1, score))
    assert math.isnan(one["auc_se"]) and "SE undefined" in one["note"]
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp["label"]) == {"Mass"}
    text = (out / "report.md").read_text()
    assert "**Hernia** (resnet34, 64 px, seed 0): not tested: no positives" in text
    assert "synthetic" not in text[:400].lower()
    assert "- Note: Uncertain labels were mapped to 1 (U-Ones)." in text


def test_cells_on_different_images_use_the_unpaired_test(tmp_path):
    from monai_cxr.stats import delong_unpaired

    write_study_json(tmp_path, ["Mass"], [64, 128], ["resnet34"], [0])
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(15, int), np.zeros(25, int)]
    s64, s128 = y + rng.normal(0, 1, 40), 2 * y + rng.normal(0, 1, 40)
    write_cell(tmp_path, "Mass", "resnet34", 64, 0, y, s64, ids=[f"a{i}" for i in range(40)])
    write_cell(tmp_path, "Mass", "resnet34", 128, 0, y, s128, ids=[f"b{i}" for i in range(40)])
    out = make_report(tmp_path, tensorboard=False)
    row = pd.read_csv(out / "comparisons.csv").iloc[0]
    assert not row["paired"]
    (a1,), c1 = kernel_delong(y, s64)
    (a2,), c2 = kernel_delong(y, s128)
    assert row["diff"] == pytest.approx(a1 - a2, abs=1e-7)
    assert row["diff_se"] == pytest.approx(math.sqrt(c1[0, 0] + c2[0, 0]), rel=1e-6)
    assert row["p_value"] == pytest.approx(delong_unpaired(y, s64, y, s128).p_value, rel=1e-6)
    assert "(unpaired)" in (out / "report.md").read_text()


def test_reference_resolution_option_and_its_error(tmp_path):
    make_study(tmp_path, labels=("Mass",), resolutions=(32, 64, 128), n=40)
    out = make_report(tmp_path, out_dir=tmp_path / "r64", reference_resolution=64, tensorboard=False)
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp.loc[comp["kind"] == "reference", "resolution_b"]) == {64}
    with pytest.raises(CxrError, match="--reference-resolution 256 was not run"):
        make_report(tmp_path, reference_resolution=256)


def test_cli_without_finished_cell_is_one_line_error(tmp_path, capsys):
    from monai_cxr.cli import main

    write_cell(tmp_path, "Mass", "resnet34", 64, 0, finished=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monai-cxr: error: no finished cell") and "\n" not in err


@pytest.mark.parametrize("edit, message", [
    (lambda cell: (cell / "cell.json").write_text(
        (cell / "cell.json").read_text().replace('"resolution": 64', '"resolution": "abc"')),
     "resolution and seed must be integers"),
    (lambda cell: (cell / "predictions.csv").write_text(
        (cell / "predictions.csv").read_text().replace("\n", "\nx0,p0,1,inf\n", 1)),
     "score must hold finite numbers"),
    (lambda cell: (cell / "predictions.csv").write_text(
        (cell / "predictions.csv").read_text().replace("\n", "\nx0,p0,1,high\n", 1)),
     "score must hold finite numbers"),
])
def test_bad_cell_files_are_one_line_errors(tmp_path, capsys, edit, message):
    from monai_cxr.cli import main

    cell = write_cell(tmp_path, "Mass", "resnet34", 64, 0, y=[0, 1, 0, 1, 0, 1], score=[.1, .9, .2, .8, .4, .6])
    edit(cell)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path), "--no-tensorboard"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_rerun_replaces_the_report(full, tmp_path):
    study, truth, _ = full
    copy = tmp_path / "study"
    shutil.copytree(study / "bundles", copy / "bundles")
    shutil.copy(study / "study.json", copy / "study.json")
    for cell in (copy / "bundles").glob("*densenet121*"):  # now a one-architecture study
        shutil.rmtree(cell)
    out = make_report(copy)
    assert not (out / "figures" / "architectures.png").exists()
    out = make_report(copy)
    assert len([p for p in (out / "tensorboard").iterdir() if p.is_dir()]) == len(truth) // 2
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_rows_in_any_order_pair_on_image_id_and_truth_must_agree(tmp_path):
    write_study_json(tmp_path, ["Mass"], [64, 128], ["resnet34"], [0])
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(12, int), np.zeros(28, int)]
    s64, s128 = y + rng.normal(0, 1, 40), 2 * y + rng.normal(0, 1, 40)
    ids = np.array([f"i{i:02d}" for i in range(40)])
    perm = rng.permutation(40)
    write_cell(tmp_path, "Mass", "resnet34", 64, 0, y, s64, ids=list(ids))
    write_cell(tmp_path, "Mass", "resnet34", 128, 0, y[perm], s128[perm], ids=list(ids[perm]))
    out = make_report(tmp_path, tensorboard=False)
    row = pd.read_csv(out / "comparisons.csv").iloc[0]
    auc, cov = kernel_delong(y, [s64, s128])
    assert row["paired"] and row["n_cases"] == 40
    assert row["diff_se"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))

    flipped = y.copy()
    flipped[0] = 0
    write_cell(tmp_path, "Mass", "resnet34", 128, 0, flipped, s128, ids=list(ids))
    with pytest.raises(CxrError, match="disagree on the truth of image 'i00'"):
        make_report(tmp_path, tensorboard=False)


def test_cli_report_with_options_and_bad_figure_label(tmp_path, capsys):
    from monai_cxr.cli import main

    make_study(tmp_path, labels=("Edema", "Mass"), resolutions=(32, 64), archs=("a1", "a2"), n=40)
    main(["report", "--study-dir", str(tmp_path), "--out", str(tmp_path / "r"),
          "--figure-labels", "Edema", "--no-tensorboard"])
    svg = (tmp_path / "r" / "figures" / "architectures.svg").read_text()
    assert ">Edema<" in svg and ">Mass<" not in svg
    assert not (tmp_path / "r" / "tensorboard").exists()
    assert "--figure-labels Edema --no-tensorboard`" in (tmp_path / "r" / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path), "--figure-labels", "Hernia"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "monai-cxr: error: figure label 'Hernia' has no finished cell; labels: Edema, Mass")
