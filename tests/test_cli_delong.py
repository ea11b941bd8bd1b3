"""`monai-cxr delong`: the JSON contract, the table, one-line errors, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from monai_cxr.cli import main
from monai_cxr.stats import delong


@pytest.fixture()
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(60) < 0.4).astype(int)
    base = rng.normal(size=60) + y
    s = np.stack([np.round(base + rng.normal(size=60), 2), np.round(base + 2 * rng.normal(size=60), 1), np.round(base)])
    path = tmp_path / "preds.csv"
    rows = ["image_id,label,s1,s2,s3"] + [f"img{i},{y[i]},{s[0, i]},{s[1, i]},{s[2, i]}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return path, y, s


def run_json(capsys, args):
    main(args + ["--json"])
    return json.loads(capsys.readouterr().out)


def test_json_contract(csv_file, capsys):
    path, y, s = csv_file
    out = run_json(
        capsys,
        [
            "delong",
            str(path),
            "--truth-col",
            "label",
            "--score-col",
            "s1",
            "--score-col",
            "s2",
            "--score-col",
            "s3",
            "--level",
            "0.9",
        ],
    )
    ref = delong(y, s, level=0.9)
    assert [r["name"] for r in out["scores"]] == ["s1", "s2", "s3"]
    for i, row in enumerate(out["scores"]):
        assert {"name", "auc", "var", "se", "ci_low", "ci_high"} <= row.keys()
        assert row["auc"] == pytest.approx(ref.auc[i], abs=1e-15)
        assert row["var"] == pytest.approx(ref.var[i], abs=1e-15)
        assert row["se"] == pytest.approx(ref.se[i], abs=1e-15)
        assert [row["ci_low"], row["ci_high"]] == pytest.approx(ref.ci[i].tolist(), abs=1e-15)
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [("s1", "s2"), ("s1", "s3"), ("s2", "s3")]
    for p, (i, j) in zip(out["pairs"], [(0, 1), (0, 2), (1, 2)]):
        assert {"a", "b", "cov", "diff", "z", "p_value", "ratio", "ratio_se"} <= p.keys()
        c = ref.compare(i, j)
        assert p["diff"] == pytest.approx(ref.auc[i] - ref.auc[j], abs=1e-15)
        assert p["cov"] == pytest.approx(ref.cov[i, j], abs=1e-15)
        assert (p["z"], p["p_value"], p["ratio"], p["ratio_se"]) == pytest.approx(
            (c.z, c.p_value, ref.auc[i] / ref.auc[j], c.ratio_se), abs=1e-15
        )
    assert out["pairs"][0]["p_holm"] >= out["pairs"][0]["p_value"]


def test_single_score_has_no_pairs(csv_file, capsys):
    path, y, s = csv_file
    out = run_json(capsys, ["delong", str(path), "--truth-col", "label", "--score-col", "s2"])
    assert out["pairs"] == [] and out["scores"][0]["auc"] == pytest.approx(delong(y, s[1]).auc[0])


def test_an_excel_csv_utf8_file_with_a_bom_is_read(csv_file, capsys):
    """Excel's "CSV UTF-8" starts the file with a BOM; the truth column first got '\\ufefflabel' refused."""
    path, y, s = csv_file
    lines = path.read_text().splitlines()
    bom_first = path.with_name("excel.csv")
    bom_first.write_text(
        "\r\n".join(",".join([ln.split(",")[1], ln.split(",")[2]]) for ln in lines) + "\r\n", "utf-8-sig"
    )
    assert bom_first.read_bytes().startswith(b"\xef\xbb\xbflabel,s1\r\n")
    out = run_json(capsys, ["delong", str(bom_first), "--truth-col", "label", "--score-col", "s1"])
    assert out["scores"][0]["auc"] == pytest.approx(delong(y, s[0]).auc[0], abs=1e-15)


def test_table_names_models_and_figures(csv_file, capsys):
    path, y, s = csv_file
    main(["delong", str(path), "--truth-col", "label", "--score-col", "s1", "--score-col", "s2"])
    text = capsys.readouterr().out
    auc = delong(y, s[:2]).auc
    assert f"{auc[0]:6.4f}" in text and f"{auc[1]:6.4f}" in text
    assert "95% CI" in text and "s1" in text and "s2" in text
    assert text.strip().splitlines()[-1].split()[:2] == ["s1", "s2"]


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (None, ["--truth-col", "label", "--score-col", "nope"], "no column 'nope'"),
        (None, ["--truth-col", "truth", "--score-col", "s1"], "no column 'truth'"),
        (None, ["--truth-col", "label", "--score-col", "s1", "--score-col", "s1"], "repeats"),
        (
            None,
            ["--truth-col", "label", "--score-col", "label", "--score-col", "s1"],
            "both the truth column and a score column",
        ),
        (
            ("img3,", "img3,2"),
            ["--truth-col", "label", "--score-col", "s1"],
            "line 5: truth column 'label' holds '2'; allowed: 0 or 1",
        ),
        ("nan", ["--truth-col", "label", "--score-col", "s1"], "not a finite number"),
        ("text", ["--truth-col", "label", "--score-col", "s1"], "holds 'abc'"),
        ("one-class", ["--truth-col", "label", "--score-col", "s1"], "single class"),
    ],
)
def test_errors_are_one_line_exit_2(csv_file, capsys, edit, args, message):
    path, y, s = csv_file
    lines = path.read_text().splitlines()
    if edit == "nan":
        lines[4] = lines[4].rsplit(",", 3)[0] + ",nan,0,0"
    elif edit == "text":
        lines[4] = lines[4].rsplit(",", 3)[0] + ",abc,0,0"
    elif edit == "one-class":
        lines = [lines[0]] + [",".join([r.split(",")[0], "1", *r.split(",")[2:]]) for r in lines[1:]]
    elif edit:
        head, rest = lines[4].split(",", 1)
        lines[4] = head + ",2," + rest.split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as info:
        main(["delong", str(path), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("monai-cxr: error:")


def test_missing_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["delong", str(tmp_path / "absent.csv"), "--truth-col", "y", "--score-col", "s"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"monai-cxr: error: {tmp_path / 'absent.csv'}: no such file"


def test_delong_command_does_not_import_torch(csv_file):
    path, _, _ = csv_file
    code = (
        "import sys, json; from monai_cxr.cli import main; "
        f"main(['delong', {str(path)!r}, '--truth-col', 'label', '--score-col', 's1', '--json']); "
        "sys.stderr.write(json.dumps(sorted(m for m in ('torch', 'monai') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["scores"][0]["name"] == "s1"
    assert json.loads(done.stderr) == []
