"""The study report on synthetic prediction files whose AUCs are known.

Expected numbers come from independent code here where it exists: scikit-learn's AUC, DeLong
by the O(m n) pairwise kernel, Holm as R's ``p.adjust``, accuracies and Youden by brute force.
Pooled values are checked against ``monai_cxr.stats`` called directly on the test fold (that
module has its own tests), to show that the report feeds it the right seeds and images.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import (
    cell_name,
    make_images,
    make_study,
    scored,
    write_cell,
    write_data,
    write_study_json,
)
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from monai_cxr.errors import CxrError
from monai_cxr.grid.cells import label_slug
from monai_cxr.report import make_report
from monai_cxr.report.paper import PUBLISHED
from monai_cxr.report.tables import add_holm, pairs_to_test, reference_for
from monai_cxr.stats import pool_seeds, pooled_difference, sufficient_resolution

RESOLUTIONS = (32, 64, 128, 320, 448)
SEEDS = (0, 1)
LOGGED = ("Mass", "resnet34", 64, 1)  # the cell of the full study with training curves


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


def write_curves(folder: Path, values):
    """Training curves as a cell's TensorBoardStatsHandler writes them (bundles/<cell>/logs/)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder / "logs")) as writer:
        for epoch, value in enumerate(values, start=1):
            writer.add_scalar("val_auc", value, epoch)
    (folder / "logs" / "run.log").write_text("not an event file\n")


def block(truth, label, arch, r, seeds=SEEDS, fold="test"):
    """(y, (S, n) scores) of a label x arch x resolution's seeds on one fold."""
    y = scored(truth[(label, arch, r, seeds[0])], fold)[0]
    return y, np.vstack([scored(truth[(label, arch, r, s)], fold)[1] for s in seeds])


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A complete two-label, two-architecture, two-seed study with val and test folds, and its report."""
    study = tmp_path_factory.mktemp("study")
    truth = make_study(
        study,
        labels=("Mass", "Nodule"),
        resolutions=RESOLUTIONS,
        archs=("densenet121", "resnet34"),
        seeds=SEEDS,
        n_val=60,
        n_test=90,
    )
    write_curves(study / "bundles" / cell_name(*LOGGED), [0.6, 0.7, 0.65])
    out = make_report(study)
    return study, truth, out


# ------------------------------------------------------------------ 1. scored on test, operating point
def test_summary_is_scored_on_test_with_the_val_operating_point(full):
    study, truth, out = full
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(truth) == 40
    assert set(summary["fold"]) == {"test"}
    for _, row in summary.iterrows():
        key = (row["label"], row["arch"], row["resolution"], row["seed"])
        y, s = scored(truth[key], "test")
        yv, sv = scored(truth[key], "val")
        auc, cov = kernel_delong(y, s)
        se = math.sqrt(cov[0, 0])
        assert (row["n_pos"], row["n_neg"]) == (y.sum(), len(y) - y.sum())
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-7)
        assert row["auc"] == pytest.approx(auc[0], abs=1e-7)
        assert row["auc"] != pytest.approx(roc_auc_score(yv, sv), abs=1e-9)  # not the val AUC
        assert row["val_auc"] == pytest.approx(roc_auc_score(yv, sv), abs=1e-7)
        assert row["auc_se"] == pytest.approx(se, rel=1e-6)
        assert row["auc_ci_low"] == pytest.approx(max(0, auc[0] - 1.959964 * se), abs=1e-6)
        assert row["auc_ci_high"] == pytest.approx(min(1, auc[0] + 1.959964 * se), abs=1e-6)
        assert row["accuracy_050"] == pytest.approx(np.mean((s >= 0.5) == y), abs=1e-7)
        # Youden on val by brute force: the best sensitivity + specificity over val's cut points
        j = [np.mean(sv[yv == 1] >= t) - np.mean(sv[yv == 0] >= t) for t in sv]
        t = row["youden_threshold"]
        assert np.mean(sv[yv == 1] >= t) - np.mean(sv[yv == 0] >= t) == pytest.approx(max(j))
        # ... applied to test
        assert row["sensitivity"] == pytest.approx(np.mean(s[y == 1] >= t), abs=1e-9)
        assert row["specificity"] == pytest.approx(np.mean(s[y == 0] < t), abs=1e-9)
        assert row["accuracy_youden"] == pytest.approx(np.mean((s >= t) == y), abs=1e-9)
        run = json.loads((study / "bundles" / cell_name(*key) / "run.json").read_text())
        for k in ("batch_size", "images_per_s", "peak_mem_mb", "train_seconds", "torch_threads", "learning_rate"):
            assert row[k] == pytest.approx(run[k])
        assert row["init"] == "scratch"


# ------------------------------------------------------------------ 3. seeds pooled
def test_pooled_rows_pool_the_seeds_test_scores(full):
    _, truth, out = full
    pooled = pd.read_csv(out / "pooled.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert len(pooled) == 2 * 2 * len(RESOLUTIONS)
    for _, row in pooled.iterrows():
        y, scores = block(truth, row["label"], row["arch"], row["resolution"])
        expected = pool_seeds(y, scores)
        seeds = summary.query("label == @row.label and arch == @row.arch and resolution == @row.resolution")
        assert (row["n_seeds"], row["seeds"], row["fold"]) == (2, "0 1", "test")
        assert row["auc_mean"] == pytest.approx(seeds["auc"].mean(), abs=1e-9)  # the plain mean
        assert row["auc_sd"] == pytest.approx(seeds["auc"].std(ddof=1), abs=1e-9)
        assert row["auc_se"] == pytest.approx(expected.auc_se, rel=1e-9)
        assert row["df"] == pytest.approx(expected.df, rel=1e-9)
        assert (row["auc_ci_low"], row["auc_ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))


def test_comparisons_are_pooled_with_holm_per_label(full):
    _, truth, out = full
    comp = pd.read_csv(out / "comparisons.csv")
    assert "seed" not in comp.columns and set(comp["fold"]) == {"test"}
    # every resolution vs 320, then neighbours not already tested: 64-128 and 32-64
    expected_pairs = {
        (32, 320, "reference"),
        (64, 320, "reference"),
        (128, 320, "reference"),
        (448, 320, "reference"),
        (32, 64, "neighbour"),
        (64, 128, "neighbour"),
    }
    for _, group in comp.groupby(["label", "arch"]):
        assert set(zip(group["resolution_a"], group["resolution_b"], group["kind"])) == expected_pairs
    for _, row in comp.iterrows():
        y, a = block(truth, row["label"], row["arch"], row["resolution_a"])
        _, b = block(truth, row["label"], row["arch"], row["resolution_b"])
        d = pooled_difference(y, a, b)
        assert (row["n_seeds_a"], row["n_seeds_b"], row["n_cases"]) == (2, 2, len(y))
        for column, value in (
            ("diff", d.diff),
            ("diff_se", d.se),
            ("p_value", d.p_value),
            ("df", d.df),
            ("ratio", d.ratio),
            ("ratio_se", d.ratio_se),
            ("diff_ci_low", d.ci_low),
        ):
            assert row[column] == pytest.approx(value, rel=1e-9), column
        assert row["auc_a"] == pytest.approx(np.mean([roc_auc_score(y, s) for s in a]), abs=1e-9)
    for _, group in comp.groupby("label"):  # the family: all tests of one label
        assert len(group) == 12
        np.testing.assert_allclose(group["p_holm"], r_holm(group["p_value"]), rtol=1e-6)


def test_one_seed_comparisons_are_delongs_paired_test(tmp_path):
    truth = make_study(tmp_path, labels=("Mass",), resolutions=(64, 128), n_val=30, n_test=50)
    out = make_report(tmp_path, tensorboard=False)
    row = pd.read_csv(out / "comparisons.csv").iloc[0]
    y, sa = scored(truth[("Mass", "resnet34", 64, 0)])
    _, sb = scored(truth[("Mass", "resnet34", 128, 0)])
    auc, cov = kernel_delong(y, [sa, sb])
    diff_se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    z = (auc[0] - auc[1]) / diff_se
    a1, a2 = auc
    ratio_se = math.sqrt(cov[0, 0] / a2**2 + a1**2 * cov[1, 1] / a2**4 - 2 * a1 * cov[0, 1] / a2**3)
    assert row["diff"] == pytest.approx(a1 - a2, abs=1e-7)
    assert row["diff_se"] == pytest.approx(diff_se, rel=1e-6)
    assert row["diff_ci_low"] == pytest.approx(a1 - a2 - 1.959964 * diff_se, abs=1e-6)
    assert row["p_value"] == pytest.approx(2 * norm.sf(abs(z)), rel=1e-5)
    assert row["ratio_se"] == pytest.approx(ratio_se, rel=1e-5)
    pooled = pd.read_csv(out / "pooled.csv")
    assert pooled["auc_se"].iloc[0] == pytest.approx(math.sqrt(kernel_delong(y, sa)[1][0, 0]), rel=1e-6)
    assert math.isnan(pooled["auc_sd"].iloc[0]) and pooled["df"].iloc[0] == math.inf


def test_holm_on_known_p_values_flows_into_p_holm():
    frame = pd.DataFrame({"label": ["A", "A", "A", "B", "B"], "p_value": [0.01, 0.04, 0.03, 0.02, np.nan]})
    add_holm(frame)
    np.testing.assert_allclose(frame["p_holm"][:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(frame["p_holm"][4])


def test_reference_defaults_to_320_else_highest():
    assert reference_for([32, 64, 320, 448]) == 320
    assert reference_for([32, 64, 128]) == 128
    assert reference_for([32, 64, 128], requested=64) == 64
    assert pairs_to_test([32, 64, 128], 128) == [(32, 128, "reference"), (64, 128, "reference"), (32, 64, "neighbour")]


# ------------------------------------------------------------------ 4. the verdict
def test_verdict_rows_are_sufficient_resolution_on_the_pooled_test_scores(full):
    _, truth, out = full
    verdict = pd.read_csv(out / "verdict.csv")
    assert len(verdict) == 4 and set(verdict["margin"]) == {0.02}
    for _, row in verdict.iterrows():
        scores = {r: block(truth, row["label"], row["arch"], r)[1] for r in RESOLUTIONS}
        y = block(truth, row["label"], row["arch"], 64)[0]
        v = sufficient_resolution(y, scores, margin=0.02)
        assert (row["best_resolution"], row["sufficient_resolution"]) == (v.best, v.sufficient)
        assert row["auc_best"] == pytest.approx(v.pooled[v.best].auc_mean)
        assert row["auc_sufficient"] == pytest.approx(v.pooled[v.sufficient].auc_mean)
        assert row["n_seeds"] == 2 and row["resolutions"] == " ".join(map(str, RESOLUTIONS))


@pytest.fixture(scope="module")
def verdict_study(tmp_path_factory):
    """Edema: every size from 64 px up is as good (within 0.01 AUC); Nodule: AUC climbs with size."""
    study = tmp_path_factory.mktemp("verdict")

    def signal(label, arch, r):
        if label == "Edema":
            return 0.5 if r == 32 else 1.5 + 0.01 * np.log2(r / 64)
        return 0.6 * np.log2(r) - 2

    truth = make_study(
        study,
        labels=("Edema", "Nodule"),
        resolutions=(32, 64, 128, 256),
        seeds=(0, 1, 2),
        n_val=40,
        n_test=200,
        signal=signal,
        shared=2.0,
        noise=0.1,
    )
    return study, truth


def test_verdict_finds_a_low_resolution_that_is_truly_as_good(verdict_study, caplog):
    study, _ = verdict_study
    with caplog.at_level(logging.INFO, logger="monai_cxr"):
        out = make_report(study, tensorboard=False)
    verdict = pd.read_csv(out / "verdict.csv").set_index("label")
    edema = verdict.loc["Edema"]
    assert edema["sufficient_resolution"] == 64 < edema["best_resolution"]
    assert edema["p_holm"] < 0.05 and edema["auc_best"] - edema["auc_sufficient"] < 0.02
    assert "32" not in edema["non_inferior"].split()
    nodule = verdict.loc["Nodule"]  # each size is clearly worse than the next: nothing smaller suffices
    assert nodule["sufficient_resolution"] == nodule["best_resolution"] == 256
    assert math.isnan(nodule["p_holm"]) and pd.isna(nodule["non_inferior"])
    text = (out / "report.md").read_text()
    first = re.search(r"^## .*$", text, re.MULTILINE).group(0)
    assert first == "## Verdict (`verdict.csv`)"  # report.md opens with the verdict
    assert text.index("![How much resolution") < text.index("## What was run")
    assert "- **Edema** (resnet34, 3 seeds, test fold): best at 256 px" in text
    assert "64 px is enough" in text
    # the verdict table is the last thing logged
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-4].startswith("verdict: smallest input size within 0.02 AUC")
    assert re.fullmatch(r"\s*Edema\s+resnet34\s+test\s+3\s+256\s+\S+\s+64\s+\S+\s+\S+", messages[-2])
    assert re.fullmatch(r"\s*Nodule\s+resnet34\s+test\s+3\s+256\s+\S+\s+256\s+\S+\s+-", messages[-1])


def test_margin_option_and_bad_margins(verdict_study, tmp_path, capsys):
    from monai_cxr.cli import main

    study, _ = verdict_study
    for bad in (0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(CxrError, match="margin .* is not in \\(0, 1\\)"):
            make_report(study, out_dir=tmp_path / "bad", margin=bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(study), "--margin", "1", "--no-tensorboard"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "monai-cxr: error: margin 1.0 is not in (0, 1); give an AUC difference, e.g. 0.02"
    main(["report", "--study-dir", str(study), "--out", str(tmp_path / "r"), "--margin", "0.0001", "--no-tensorboard"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-4].startswith("verdict: smallest input size within 0.0001 AUC")  # printed last
    verdict = pd.read_csv(tmp_path / "r" / "verdict.csv").set_index("label")
    assert set(verdict["margin"]) == {0.0001}
    assert verdict.loc["Edema", "sufficient_resolution"] > 64  # too tight a margin: 64 px is not shown enough
    assert "--margin 0.0001" in (tmp_path / "r" / "report.md").read_text()


# ------------------------------------------------------------------ 5. the paper side by side
def test_paper_values_beside_ours(full):
    _, truth, out = full
    paper = pd.read_csv(out / "paper.csv")
    assert sorted(zip(paper["label"], paper["arch"])) == [
        ("Mass", "densenet121"),
        ("Mass", "resnet34"),
        ("Nodule", "densenet121"),
        ("Nodule", "resnet34"),
    ]
    published = {p.label: p for p in PUBLISHED}
    for _, row in paper.iterrows():
        pub = published[row["label"]]
        y, low = block(truth, row["label"], row["arch"], 64)
        _, high = block(truth, row["label"], row["arch"], 320)
        d = pooled_difference(y, low, high)
        assert (row["auc_low"], row["auc_high"], row["ratio"]) == pytest.approx((d.auc_a, d.auc_b, d.ratio))
        assert (row["paper_auc_low"], row["paper_auc_high"], row["paper_ratio"]) == (
            pub.auc_low,
            pub.auc_high,
            pub.ratio,
        )
        lo, hi = pub.ratio - 1.959964 * pub.ratio_sd, pub.ratio + 1.959964 * pub.ratio_sd
        assert row["within"] == (d.ratio_ci_low <= hi and d.ratio_ci_high >= lo)
    text = (out / "report.md").read_text()
    section = text[text.index("## Side by side with Sabottke & Spieler (2020)") : text.index("## What was run")]
    assert "| Nodule | resnet34 | test |" in section and "| 0.689 |" in section and "80.7% ± 1.5" in section
    assert "86.7% ± 1.2" in section and "doi:10.1148/ryai.2019190015" in section
    assert "synthetic phantom data" in section


# ------------------------------------------------------------------ report.md, figures, TensorBoard
def test_report_md_is_self_contained_and_says_synthetic(full):
    _, _, out = full
    text = (out / "report.md").read_text()
    assert "synthetic" in text[:600].lower()
    assert "Optimistic" not in text  # every label was scored on test
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert {Path(x).stem for x in links} == {
        "verdict",
        "auc_vs_resolution",
        "auc_ratio",
        "architectures",
        "tradeoff",
        "roc_mass",
        "roc_nodule",
    }
    for link in links:
        assert not Path(link).is_absolute() and (out / link).is_file()
    for svg in (out / "figures").glob("*.svg"):
        assert "synthetic phantom data" in svg.read_text()
    roc = (out / "figures" / "roc_mass.svg").read_text()
    assert "test fold; seed 0" in roc and ">320 px<" in roc and ">32 px<" in roc
    comp = pd.read_csv(out / "comparisons.csv")
    low = comp.query("label == 'Nodule' and arch == 'resnet34' and resolution_a == 32 and kind == 'reference'").iloc[0]
    line = next(x for x in text.splitlines() if x.startswith("- **Nodule** (resnet34"))
    assert f"At 32 px it keeps {100 * low['ratio']:.1f}% ± {100 * low['ratio_se']:.1f} of its AUC at 320 px" in line
    assert "Missing cells" not in text and "not in this study's grid" not in text
    assert "- Torch threads per cell: 1, 2" in text and "| threads |" in text


def test_tensorboard_one_run_per_cell_with_session_and_curves(full):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    study, truth, out = full
    summary = pd.read_csv(out / "summary.csv")
    pooled = pd.read_csv(out / "pooled.csv")
    tb = out / "tensorboard"
    top = EventAccumulator(str(tb)).Reload()
    assert set(top.Tags()["images"]) == {
        f"figures/{n}"
        for n in ("verdict", "auc_vs_resolution", "auc_ratio", "architectures", "tradeoff", "roc_mass", "roc_nodule")
    }
    text = top.Tensors("verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "Nodule" in text and "sufficient size" in text
    curve = top.Scalars("auc/mass/resnet34")
    expected = pooled.query("label == 'Mass' and arch == 'resnet34'")
    assert [e.step for e in curve] == list(expected["resolution"])
    np.testing.assert_allclose([e.value for e in curve], expected["auc_mean"], rtol=1e-6)

    runs = sorted(p.name for p in tb.iterdir() if p.is_dir())
    assert runs == sorted(p.name for p in (study / "bundles").iterdir())  # the run name is the cell name
    assert len(runs) == len(truth)
    name = cell_name(*LOGGED)
    run = EventAccumulator(str(tb / name)).Reload()
    assert "_hparams_/session_start_info" in run.PluginTagToContent("hparams")
    assert [e.value for e in run.Scalars("val_auc")] == pytest.approx([0.6, 0.7, 0.65])  # the cell's curves
    assert not (tb / name / "run.log").exists()
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        run.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hp["label"] == "Mass" and hp["arch"] == "resnet34" and hp["resolution"] == 64 and hp["seed"] == 1
    assert hp["learning_rate"] == pytest.approx(1e-3) and hp["init"] == "scratch" and hp["torch_threads"] == 2
    assert hp["batch_size"] == 64 and hp["epochs"] == 1 and hp["device"] == "cpu"
    row = summary.query("label == 'Mass' and arch == 'resnet34' and resolution == 64 and seed == 1")
    prow = pooled.query("label == 'Mass' and arch == 'resnet34' and resolution == 64")
    assert run.Scalars("hparam/auc")[0].value == pytest.approx(row["auc"].item(), rel=1e-6)
    assert run.Scalars("hparam/auc_se")[0].value == pytest.approx(row["auc_se"].item(), rel=1e-6)
    assert run.Scalars("hparam/pooled_auc")[0].value == pytest.approx(prow["auc_mean"].item(), rel=1e-6)
    assert run.Scalars("hparam/pooled_auc_se")[0].value == pytest.approx(prow["auc_se"].item(), rel=1e-6)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        EventAccumulator(str(tb / runs[0])).Reload().PluginTagToContent("hparams")["_hparams_/experiment"]
    )
    declared = {h.name for h in experiment.experiment.hparam_infos}
    assert {
        "label",
        "arch",
        "resolution",
        "seed",
        "learning_rate",
        "epochs",
        "batch_size",
        "init",
        "torch_threads",
    } <= declared


# ------------------------------------------------------------------ 6. the study, not the folder
def test_report_covers_the_grid_and_ignores_folders_of_an_earlier_grid(tmp_path):
    make_study(tmp_path, labels=("Edema",), resolutions=(64, 128), n_val=20, n_test=30)
    pred = pd.read_csv(
        tmp_path / "bundles" / cell_name("Edema", "resnet34", 64, 0) / "predictions.csv",
        dtype={"image_id": str, "patient_id": str},
    )
    write_cell(tmp_path, "Edema", "resnet34", 16, 0, pred)  # finished, but from an earlier grid
    write_cell(tmp_path, "Edema", "resnet34", 256, 0, finished=False)  # in the grid, not run
    settings = json.loads((tmp_path / "study.json").read_text())
    settings["grid"]["cells"] += [cell_name("Edema", "resnet34", 256, 0), cell_name("Edema", "resnet34", 512, 0)]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    out = make_report(tmp_path, tensorboard=False)
    assert sorted(pd.read_csv(out / "summary.csv")["resolution"]) == [64, 128]
    comp = pd.read_csv(out / "comparisons.csv")
    assert list(zip(comp["resolution_a"], comp["resolution_b"])) == [(64, 128)]  # 128: highest
    text = (out / "report.md").read_text()
    assert "> 1 folder in `bundles/` is not in this study's grid" in text
    assert "`edema__resnet34__r16__s0`" in text
    assert "Partial study" in text and "## Missing cells" in text
    assert "`edema__resnet34__r256__s0`" in text and "no run.json" in text
    assert "`edema__resnet34__r512__s0`" in text and "not generated" in text
    assert "Cells finished: 2 of the grid's 4" in text


def test_a_study_without_a_grid_is_a_one_line_error(tmp_path):
    make_study(tmp_path, labels=("Mass",), resolutions=(64,), n_val=10, n_test=10)
    settings = json.loads((tmp_path / "study.json").read_text())
    del settings["grid"]["cells"]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    with pytest.raises(CxrError, match="has no generated grid"):
        make_report(tmp_path)


@pytest.fixture
def small(tmp_path):
    truth = make_study(tmp_path, labels=("Mass",), resolutions=(64, 128), n_val=20, n_test=30)
    return tmp_path, truth, tmp_path / "bundles" / cell_name("Mass", "resnet34", 128, 0) / "predictions.csv"


def test_a_truncated_predictions_file_is_an_error_naming_it(small, capsys):
    from monai_cxr.cli import main

    study, truth, path = small
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")  # the last row lost
    pred = truth[("Mass", "resnet34", 128, 0)]
    last = pred.iloc[-1]
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(study), "--no-tensorboard"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    n_fold = int((pred["fold"] == last["fold"]).sum())
    assert err == (
        f"monai-cxr: error: {path} has {n_fold - 1} {last['fold']} row(s) but data/split.csv has "
        f"{n_fold} {last['fold']} image(s) of label 'Mass'; first missing: {last['image_id']!r} "
        "(truncated or stale: rerun the cell)"
    )


def test_predictions_of_other_images_or_truth_are_errors(small):
    study, truth, path = small
    pred = truth[("Mass", "resnet34", 128, 0)]
    moved = pred.copy()
    moved.loc[moved.index[0], "fold"] = "test" if moved["fold"].iloc[0] == "val" else "val"
    moved.to_csv(path, index=False)
    with pytest.raises(
        CxrError, match=f"image '{moved['image_id'].iloc[0]}' is not a {moved['fold'].iloc[0]} image of label 'Mass'"
    ):
        make_report(study, tensorboard=False)
    train = pd.concat([pred, pred.iloc[[0]].assign(image_id="train0001.png", fold="val")])
    train.to_csv(path, index=False)
    with pytest.raises(CxrError, match="image 'train0001.png' is not a val image"):
        make_report(study, tensorboard=False)
    flipped = pred.copy()
    flipped.loc[flipped.index[5], "label"] = 1 - flipped["label"].iloc[5]
    flipped.to_csv(path, index=False)
    with pytest.raises(
        CxrError,
        match=f"image '{pred['image_id'].iloc[5]}' has label {1 - pred['label'].iloc[5]} but data/index.csv says",
    ):
        make_report(study, tensorboard=False)


def test_unknown_images_are_left_out_and_rows_in_any_order_pair_up(tmp_path):
    truth = make_study(tmp_path, labels=("Mass",), resolutions=(64, 128), n_val=30, n_test=60, unknown=0.3)
    index = pd.read_csv(tmp_path / "data" / "index.csv")
    split = pd.read_csv(tmp_path / "data" / "split.csv")
    assert (index["Mass"] == -1).sum() > 5
    path = tmp_path / "bundles" / cell_name("Mass", "resnet34", 128, 0) / "predictions.csv"
    shuffled = truth[("Mass", "resnet34", 128, 0)].sample(frac=1.0, random_state=1)
    shuffled.to_csv(path, index=False)
    out = make_report(tmp_path, tensorboard=False)
    summary = pd.read_csv(out / "summary.csv")
    known_test = ((split["fold"] == "test") & (index["Mass"] >= 0)).sum()
    assert set(summary["n_pos"] + summary["n_neg"]) == {known_test}
    row = pd.read_csv(out / "comparisons.csv").iloc[0]
    y, sa = scored(truth[("Mass", "resnet34", 64, 0)])
    _, sb = scored(truth[("Mass", "resnet34", 128, 0)])
    _, cov = kernel_delong(y, [sa, sb])
    assert row["n_cases"] == known_test
    assert row["diff_se"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


# ------------------------------------------------------------------ 1. val only: optimistic
def test_a_val_only_study_is_flagged_optimistic(tmp_path, capsys):
    from monai_cxr.cli import main

    truth = make_study(tmp_path, labels=("Mass",), resolutions=(64, 128), n_val=40, n_test=0)
    main(["report", "--study-dir", str(tmp_path), "--no-tensorboard"])
    captured = capsys.readouterr()
    assert (
        "warning: report: no test predictions for Mass: their AUCs are on the val images that also chose "
        "the checkpoint (optimistic)" in captured.err
    )
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert set(summary["fold"]) == {"val"}
    y, s = scored(truth[("Mass", "resnet34", 64, 0)], "val")
    assert summary.query("resolution == 64")["auc"].item() == pytest.approx(roc_auc_score(y, s))
    np.testing.assert_allclose(summary["auc"], summary["val_auc"], rtol=1e-12)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "> **Optimistic AUCs:** Mass has no test predictions" in text[:1200]
    assert "selection and scoring used the same images" in text
    assert set(pd.read_csv(tmp_path / "report" / "verdict.csv")["fold"]) == {"val"}


def test_old_predictions_without_fold_are_val_only(tmp_path):
    truth = make_study(tmp_path, labels=("Mass", "Nodule"), resolutions=(64, 128), n_val=30, n_test=40)
    pred = truth[("Nodule", "resnet34", 64, 0)]
    write_cell(tmp_path, "Nodule", "resnet34", 64, 0, pred[pred["fold"] == "val"], fold_column=False)
    out = make_report(tmp_path, tensorboard=False)
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary["label"], summary["fold"])) == {"Mass": "test", "Nodule": "val"}
    assert "> **Optimistic AUCs:** Nodule has no test predictions" in (out / "report.md").read_text()


# ------------------------------------------------------------------ 8. names are data
def test_labels_with_mathtext_and_format_characters_render_as_written(tmp_path):
    labels = ("Mass $x^2$ {a} 50%", "Nod_ule \\n %s {0}")
    make_study(tmp_path, labels=labels, resolutions=(32, 64), archs=("a1", "a2"), n_val=20, n_test=30)
    out = make_report(tmp_path)
    svg = (out / "figures" / "auc_vs_resolution.svg").read_text()
    assert ">Mass $x^2$ {a} 50%<" in svg and ">Nod_ule \\n %s {0}<" in svg
    roc = out / "figures" / f"roc_{label_slug(labels[0])}.svg"
    assert "ROC curves: Mass $x^2$ {a} 50%" in roc.read_text()
    assert ">Mass $x^2$ {a} 50%<" in (out / "figures" / "verdict.svg").read_text()
    text = (out / "report.md").read_text()
    assert "| Mass \\$x^2\\$ {a} 50% | a1 |" in text and "Nod\\_ule \\\\n %s {0}" in text
    assert set(pd.read_csv(out / "verdict.csv")["label"]) == set(labels)
    assert (out / "tensorboard" / cell_name(labels[0], "a1", 32, 0)).is_dir()


# ------------------------------------------------------------------ odd data and options
def test_label_without_positives_is_reported_not_crashed(tmp_path):
    write_study_json(tmp_path, ["Mass", "Hernia", "Pneumonia"], [64, 128], ["resnet34"], [0], synthetic=False)
    settings = json.loads((tmp_path / "study.json").read_text())
    settings["data"]["notes"] = ["Uncertain labels were mapped to 1 (U-Ones)."]
    (tmp_path / "study.json").write_text(json.dumps(settings))
    images = make_images(["Mass"], n_val=20, n_test=30)
    test = (images["fold"] == "test").to_numpy()
    images["Hernia"] = np.where(images["fold"] == "val", images["Mass"], 0)  # no positive in test
    images["Pneumonia"] = np.where(test, 0, images["Mass"])
    images.loc[np.flatnonzero(test)[0], "Pneumonia"] = 1  # one positive in test
    write_data(tmp_path, images)
    rng = np.random.default_rng(0)
    scored_rows = images[images["fold"] != "train"]
    for label in ("Mass", "Hernia", "Pneumonia"):
        for r in (64, 128):
            write_cell(
                tmp_path,
                label,
                "resnet34",
                r,
                0,
                pd.DataFrame(
                    {
                        "image_id": scored_rows["image_id"],
                        "patient_id": scored_rows["patient_id"],
                        "fold": scored_rows["fold"],
                        "label": scored_rows[label],
                        "score": rng.random(len(scored_rows)),
                    }
                ),
            )
    out = make_report(tmp_path, tensorboard=False)
    summary = pd.read_csv(out / "summary.csv").set_index(["label", "resolution"])
    hernia = summary.loc[("Hernia", 64)]
    assert hernia["n_pos"] == 0 and math.isnan(hernia["auc"]) and math.isnan(hernia["sensitivity"])
    assert hernia["note"] == "test: no positives: AUC undefined"
    assert not math.isnan(hernia["specificity"])  # the val threshold still applies to the negatives
    one = summary.loc[("Pneumonia", 64)]  # one positive: an AUC, but no DeLong SE
    assert not math.isnan(one["auc"]) and math.isnan(one["auc_se"]) and "SE undefined" in one["note"]
    assert set(pd.read_csv(out / "comparisons.csv")["label"]) == {"Mass"}
    verdict = pd.read_csv(out / "verdict.csv").set_index("label")
    assert math.isnan(verdict.loc["Hernia", "best_resolution"]) and "no positives" in verdict.loc["Hernia", "note"]
    text = (out / "report.md").read_text()
    assert "**Hernia** (resnet34, 64 px, seed 0): not tested: test: no positives" in text
    assert "- **Hernia** (resnet34): no verdict: test: no positives" in text
    assert "synthetic" not in text[:400].lower()
    assert "- Note: Uncertain labels were mapped to 1 (U-Ones)." in text
    assert not (out / "paper.csv").exists() and "Side by side" not in text  # no 64-vs-320 cells


def test_reference_resolution_option_and_its_error(tmp_path):
    make_study(tmp_path, labels=("Mass",), resolutions=(32, 64, 128), n_val=20, n_test=30)
    out = make_report(tmp_path, out_dir=tmp_path / "r64", reference_resolution=64, tensorboard=False)
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(comp.loc[comp["kind"] == "reference", "resolution_b"]) == {64}
    with pytest.raises(CxrError, match="--reference-resolution 256 was not run"):
        make_report(tmp_path, reference_resolution=256)


def test_cli_without_finished_cell_is_one_line_error(tmp_path, capsys):
    from monai_cxr.cli import main

    write_study_json(tmp_path, ["Mass"], [64], ["resnet34"], [0])
    write_cell(tmp_path, "Mass", "resnet34", 64, 0, finished=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monai-cxr: error: no finished cell") and "\n" not in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda cell: (cell / "cell.json").write_text(
                (cell / "cell.json").read_text().replace('"resolution": 64', '"resolution": "abc"')
            ),
            "resolution and seed must be integers",
        ),
        (
            lambda cell: (cell / "predictions.csv").write_text(
                (cell / "predictions.csv").read_text().replace("\n", "\nx0,p0,val,1,inf\n", 1)
            ),
            "score must hold finite numbers",
        ),
        (
            lambda cell: (cell / "predictions.csv").write_text(
                (cell / "predictions.csv").read_text().replace("\n", "\nx0,p0,val,1,high\n", 1)
            ),
            "score must hold finite numbers",
        ),
        (
            lambda cell: (cell / "predictions.csv").write_text(
                (cell / "predictions.csv").read_text().replace("\n", "\nx0,p0,train,1,0.5\n", 1)
            ),
            "fold must be val or test, got 'train'",
        ),
    ],
)
def test_bad_cell_files_are_one_line_errors(tmp_path, capsys, edit, message):
    from monai_cxr.cli import main

    make_study(tmp_path, labels=("Mass",), resolutions=(64,), n_val=10, n_test=10)
    edit(tmp_path / "bundles" / cell_name("Mass", "resnet34", 64, 0))
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path), "--no-tensorboard"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_rerun_after_the_grid_shrank_replaces_the_report(full, tmp_path):
    study, truth, _ = full
    copy = tmp_path / "study"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report"))
    settings = json.loads((copy / "study.json").read_text())
    settings["grid"]["archs"] = ["resnet34"]  # now a one-architecture grid; densenet121's folders stay
    settings["grid"]["cells"] = [c for c in settings["grid"]["cells"] if "densenet121" not in c]
    (copy / "study.json").write_text(json.dumps(settings))
    out = make_report(copy)
    assert not (out / "figures" / "architectures.png").exists()
    assert set(pd.read_csv(out / "summary.csv")["arch"]) == {"resnet34"}
    assert f"> {len(truth) // 2} folders in `bundles/` are not in this study's grid" in (out / "report.md").read_text()
    out = make_report(copy)
    assert len([p for p in (out / "tensorboard").iterdir() if p.is_dir()]) == len(truth) // 2
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_cli_report_with_options_and_bad_figure_label(tmp_path, capsys):
    from monai_cxr.cli import main

    make_study(tmp_path, labels=("Edema", "Mass"), resolutions=(32, 64), archs=("a1", "a2"), n_val=20, n_test=30)
    main(
        [
            "report",
            "--study-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "r"),
            "--figure-labels",
            "Edema",
            "--no-tensorboard",
        ]
    )
    svg = (tmp_path / "r" / "figures" / "architectures.svg").read_text()
    assert ">Edema<" in svg and ">Mass<" not in svg
    assert not (tmp_path / "r" / "tensorboard").exists()
    assert "--figure-labels Edema --no-tensorboard`" in (tmp_path / "r" / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--study-dir", str(tmp_path), "--figure-labels", "Hernia"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "monai-cxr: error: figure label 'Hernia' has no finished cell; labels: Edema, Mass"
    )
