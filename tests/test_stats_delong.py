"""DeLong statistics: against the O(m n) definition, pROC, hand-worked cases, bad inputs."""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from monai_cxr.errors import CxrError
from monai_cxr.stats import (
    DeLongResult,
    PairedComparison,
    delong,
    delong_unpaired,
    holm,
)

PROC = json.loads((Path(__file__).parent / "data" / "proc_reference.json").read_text())


def naive_delong(y, scores):
    """DeLong 1988 straight from the definition: the pairwise kernel psi(X_i, Y_j)."""
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    x, yy = s[:, y], s[:, ~y]  # (k, m), (k, n)
    psi = (x[:, :, None] > yy[:, None, :]) + 0.5 * (x[:, :, None] == yy[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    auc = psi.mean(axis=(1, 2))
    m, n = v10.shape[1], v01.shape[1]
    cov = np.cov(v10, ddof=1).reshape(len(s), len(s)) / m + np.cov(v01, ddof=1).reshape(len(s), len(s)) / n
    return auc, cov


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_pairwise_kernel_on_heavy_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 120))
    y = rng.random(n) < rng.uniform(0.1, 0.9)
    y[:2], y[2:4] = True, False
    levels = int(rng.integers(2, 8))  # few distinct values: ties within and across classes
    scores = rng.integers(0, levels, size=(3, n)) + y * rng.integers(0, 2, size=(3, n))
    auc, cov = naive_delong(y, scores)
    res = delong(y, scores)
    np.testing.assert_allclose(res.auc, auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.cov, cov, rtol=0, atol=1e-12)
    pair = res.compare(0, 2)
    var = cov[0, 0] + cov[2, 2] - 2 * cov[0, 2]
    assert pair.se == pytest.approx(math.sqrt(var), abs=1e-12)
    assert pair.cov == pytest.approx(cov[0, 2], abs=1e-12)


def test_continuous_scores_match_pairwise_kernel_and_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.random(400) < 0.3
    s = rng.normal(size=(2, 400)) + y
    auc, cov = naive_delong(y, s)
    res = delong(y, s)
    np.testing.assert_allclose(res.auc, auc, atol=1e-12)
    np.testing.assert_allclose(res.cov, cov, atol=1e-12)
    assert res.auc[1] == pytest.approx(roc_auc_score(y, s[1]), abs=1e-12)


def test_hand_computed_case():
    # positives 0.35, 0.8, 0.9; negatives 0.1, 0.4. Positive 0.35 beats 0.1 only.
    res = delong([0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, 0.9])
    assert res.auc.shape == (1,) and res.cov.shape == (1, 1)
    assert res.auc[0] == pytest.approx(5 / 6, abs=1e-15)
    # V10 = (1/2, 1, 1): var 1/12; V01 = (1, 2/3): var 1/18. S = (1/12)/3 + (1/18)/2 = 1/18
    assert res.var[0] == pytest.approx(1 / 18, abs=1e-15)
    assert res.se[0] == pytest.approx(math.sqrt(1 / 18), abs=1e-15)
    assert (res.n_pos, res.n_neg) == (3, 2)
    half = sps.norm.ppf(0.975) * math.sqrt(1 / 18)
    np.testing.assert_allclose(res.ci[0], [5 / 6 - half, 1.0], atol=1e-15)  # clipped at 1


def test_all_tied_scores_give_half():
    res = delong([0, 1, 0, 1], [3, 3, 3, 3])
    assert res.auc[0] == 0.5
    assert res.var[0] == 0.0  # every placement is 1/2


def test_direction_is_never_flipped():
    y = [0, 0, 0, 1, 1, 1]
    res = delong(y, [6, 5, 4, 3, 2, 1])
    assert res.auc[0] == 0.0
    np.testing.assert_array_equal(res.ci[0], [0.0, 0.0])


def test_perfect_separation_stays_inside_unit_interval():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(5000, bool), np.ones(3000, bool)]
    s = np.r_[rng.uniform(0, 0.5, 5000), rng.uniform(0.5 + 1e-9, 1, 3000)]
    res = delong(y, np.stack([s, 1 - s]))
    np.testing.assert_array_equal(res.auc, [1.0, 0.0])
    assert ((res.ci >= 0) & (res.ci <= 1)).all()


def test_accepts_bool_float_labels_and_integer_scores():
    a = delong(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1, 2, 2, 5]))
    b = delong(np.array([False, True, False, True]), [1.0, 2.0, 2.0, 5.0])
    np.testing.assert_array_equal(a.auc, b.auc)
    np.testing.assert_array_equal(a.cov, b.cov)
    assert a.auc[0] == pytest.approx(0.875)


def test_level_sets_interval_width():
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    s = rng.normal(size=200) + y
    wide, narrow = delong(y, s, level=0.99), delong(y, s, level=0.8)
    assert wide.ci[0, 1] - wide.ci[0, 0] > narrow.ci[0, 1] - narrow.ci[0, 0]
    assert wide.compare(0, 0).level == 0.99


# ---------------------------------------------------------------------------- pROC
@pytest.mark.parametrize("case", PROC["paired"], ids=lambda c: c["name"])
def test_matches_proc_paired(case):
    res = delong(case["y"], case["scores"], level=case["level"][0])
    np.testing.assert_allclose(res.auc, case["auc"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.var, case["var"], rtol=0, atol=1e-9)
    assert res.cov[0, 1] == pytest.approx(case["cov"][0], abs=1e-9)
    np.testing.assert_allclose(res.ci, case["ci"], rtol=0, atol=1e-9)
    pair = res.compare(0, 1)
    assert pair.z == pytest.approx(case["z"][0], abs=1e-9)
    assert pair.p_value == pytest.approx(case["p_value"][0], abs=1e-9)
    np.testing.assert_allclose([pair.ci_low, pair.ci_high], case["diff_ci"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", PROC["unpaired"], ids=lambda c: c["name"])
def test_matches_proc_unpaired(case):
    pair = delong_unpaired(case["y1"], case["s1"], case["y2"], case["s2"])
    assert isinstance(pair, PairedComparison) and pair.cov == 0.0
    assert pair.z == pytest.approx(case["z"][0], abs=1e-9)
    assert pair.df == pytest.approx(case["df"][0], rel=1e-9)
    assert pair.p_value == pytest.approx(case["p_value"][0], abs=1e-9)


def test_proc_reference_exercises_ties_and_below_chance():
    """The reference data must keep testing what it is there for."""
    for case in PROC["paired"]:
        s = np.asarray(case["scores"])
        assert all(len(np.unique(row)) < len(row) for row in s)
    assert min(min(c["auc"]) for c in PROC["paired"]) < 0.5


# ------------------------------------------------------------- comparisons, ratios
def test_compare_fields_follow_the_formulas():
    rng = np.random.default_rng(11)
    y = rng.random(300) < 0.35
    base = rng.normal(size=300) + y
    s = np.stack([base + rng.normal(size=300) * 0.5, base + rng.normal(size=300)])
    res = delong(y, s)
    p = res.compare(0, 1)
    a1, a2, c = res.auc[0], res.auc[1], res.cov
    assert (p.a, p.b) == (0, 1)
    assert p.diff == pytest.approx(a1 - a2, abs=1e-15)
    assert p.se == pytest.approx(math.sqrt(c[0, 0] + c[1, 1] - 2 * c[0, 1]), abs=1e-15)
    assert p.z == pytest.approx(p.diff / p.se)
    assert p.p_value == pytest.approx(2 * sps.norm.sf(abs(p.z)), rel=1e-12)
    assert p.ratio == pytest.approx(a1 / a2)
    ratio_var = c[0, 0] / a2**2 + a1**2 * c[1, 1] / a2**4 - 2 * a1 * c[0, 1] / a2**3
    assert p.ratio_se == pytest.approx(math.sqrt(ratio_var))
    zc = sps.norm.ppf(0.975)
    assert p.ci_low == pytest.approx(p.diff - zc * p.se)
    assert p.ratio_ci_high == pytest.approx(p.ratio + zc * p.ratio_se)
    assert p.df == math.inf


def test_identical_models_give_z_zero_like_proc():
    p = delong([0, 1, 0, 1, 1], [[1, 2, 3, 4, 5]] * 2).compare(0, 1)
    assert (p.diff, p.se, p.z, p.p_value, p.ratio, p.ratio_se) == (0.0, 0.0, 0.0, 1.0, 1.0, 0.0)


def test_ratio_undefined_when_denominator_auc_is_zero():
    p = delong([0, 0, 1, 1], [[1, 2, 3, 4], [4, 3, 2, 1]]).compare(0, 1)
    assert p.diff == 1.0 and math.isnan(p.ratio) and math.isnan(p.ratio_se)


def test_unpaired_equals_paired_formula_without_covariance():
    rng = np.random.default_rng(5)
    y1, y2 = rng.random(150) < 0.4, rng.random(90) < 0.5
    s1, s2 = rng.normal(size=150) + y1, rng.normal(size=90) + 0.5 * y2
    p = delong_unpaired(y1, s1, y2, s2)
    r1, r2 = delong(y1, s1), delong(y2, s2)
    assert p.diff == pytest.approx(r1.auc[0] - r2.auc[0], abs=1e-15)
    assert p.se == pytest.approx(math.sqrt(r1.var[0] + r2.var[0]), abs=1e-15)
    assert p.p_value == pytest.approx(2 * sps.t.sf(abs(p.z), p.df), rel=1e-10)
    assert p.ci_low == pytest.approx(p.diff - sps.t.ppf(0.975, p.df) * p.se, rel=1e-10)


def test_compare_rejects_bad_index():
    res = delong([0, 1, 0, 1], [[1, 2, 3, 4], [2, 1, 4, 3]])
    with pytest.raises(CxrError, match="out of range"):
        res.compare(0, 2)
    with pytest.raises(CxrError, match="integer"):
        res.compare(0, 1.5)


# ------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "y, s, match",
    [
        ([0, 1, 0, 1], [0.1, np.nan, 0.3, 0.4], "NaN or infinite"),
        ([0, 1, 0, 1], [[0.1, 0.2, 0.3, 0.4], [0, np.inf, 0, 1]], r"model rows \[1\]"),
        ([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], r"0/1 labels, found \[2\]"),
        ([0, 1, -1, 1], [0.1, 0.2, 0.3, 0.4], r"found \[-1\]"),
        ([0, 1, 0.5, 1], [0.1, 0.2, 0.3, 0.4], "0/1"),
        (["a", "b", "a", "b"], [0.1, 0.2, 0.3, 0.4], "0/1 labels"),
        ([0, 1, 0, 1], [0.1, 0.2, 0.3], r"shape \(4,\) or \(k, 4\)"),
        ([0, 1, 0, 1], [[[0.1, 0.2, 0.3, 0.4]]], "shape"),
        ([[0, 1], [0, 1]], [0.1, 0.2, 0.3, 0.4], "y_true must have shape"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "single class"),
        ([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "single class"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], "at least 2 positive and 2 negative"),
        ([1, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], "at least 2 positive and 2 negative"),
        ([], [], "single class"),
        ([0, 1, 0, 1], ["x", "y", "z", "w"], "numbers"),
    ],
)
def test_bad_input_is_a_clear_value_error(y, s, match):
    with pytest.raises(CxrError, match=match) as info:
        delong(y, s)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, "high"])
def test_bad_level(level):
    with pytest.raises(CxrError, match="level"):
        delong([0, 1, 0, 1], [1, 2, 3, 4], level=level)


def test_unpaired_rejects_several_models():
    with pytest.raises(CxrError, match="one model"):
        delong_unpaired([0, 1, 0, 1], [[1, 2, 3, 4]] * 2, [0, 1, 0, 1], [1, 2, 3, 4])


def test_importing_stats_does_not_import_torch():
    code = "import sys, monai_cxr.stats; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------- properties
labels = st.lists(st.booleans(), min_size=4, max_size=40).filter(lambda y: sum(y) >= 2 and len(y) - sum(y) >= 2)


@st.composite
def paired_data(draw):
    y = draw(labels)
    n = len(y)
    grid = st.integers(-5, 5)  # a small grid: many ties
    s1 = draw(st.lists(grid, min_size=n, max_size=n))
    s2 = draw(st.lists(grid, min_size=n, max_size=n))
    return np.array(y), np.array([s1, s2], dtype=float)


@settings(max_examples=60, deadline=None)
@given(paired_data())
def test_invariant_under_strictly_increasing_transforms(data):
    y, s = data
    res = delong(y, s)
    moved = delong(y, np.stack([np.exp(s[0] / 3) * 7 - 2, s[1] ** 3 + 100]))
    np.testing.assert_allclose(moved.auc, res.auc, atol=1e-12)
    np.testing.assert_allclose(moved.cov, res.cov, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(paired_data())
def test_swapping_models_flips_z_and_inverts_ratio(data):
    y, s = data
    res = delong(y, s)
    ab, ba = res.compare(0, 1), res.compare(1, 0)
    assert ba.z == -ab.z
    assert ba.p_value == pytest.approx(ab.p_value, abs=1e-15)
    assert ba.diff == -ab.diff
    if res.auc.min() > 0:
        assert ba.ratio == pytest.approx(1 / ab.ratio, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(paired_data(), st.floats(0.5, 0.999))
def test_ci_contains_auc_and_stays_in_unit_interval(data, level):
    y, s = data
    res = delong(y, s, level=level)
    assert ((res.auc >= 0) & (res.auc <= 1)).all()
    assert ((res.ci[:, 0] <= res.auc) & (res.auc <= res.ci[:, 1])).all()
    assert ((res.ci >= 0) & (res.ci <= 1)).all()
    p = res.compare(0, 1)
    assert p.ci_low <= p.diff <= p.ci_high


def test_result_types():
    res = delong([0, 1, 0, 1], [[1, 2, 3, 4], [2, 1, 4, 3]])
    assert isinstance(res, DeLongResult)
    assert res.auc.shape == (2,) and res.cov.shape == (2, 2) and res.ci.shape == (2, 2)
    assert res.var.shape == res.se.shape == (2,)
    np.testing.assert_array_equal(res.cov, res.cov.T)


def test_to_dict_is_json_ready_with_names_and_holm():
    res = delong([0, 0, 1, 1, 0, 1], [[1, 2, 3, 4, 2, 5], [6, 5, 2, 1, 4, 3], [1, 1, 2, 2, 1, 3]])
    out = res.to_dict(names=["a", "b", "c"])
    assert [s["name"] for s in out["scores"]] == ["a", "b", "c"]
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert out["scores"][1]["auc"] == 0.0 and out["pairs"][0]["ratio"] is None  # a / 0: null, not NaN
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    ps = [res.compare(i, j).p_value for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert [p["p_holm"] for p in out["pairs"]] == pytest.approx(holm(ps).tolist())
    with pytest.raises(CxrError, match="2 names given for 3 models"):
        res.to_dict(names=["a", "b"])


def test_int64_counts_path_gives_the_same_numbers(monkeypatch):
    """Counts switch to int64 above ~10^9 cases; force that path on a small case."""
    module = importlib.import_module("monai_cxr.stats.delong")  # the attribute is the function

    rng = np.random.default_rng(2)
    y = rng.random(80) < 0.4
    s = np.stack([rng.integers(0, 4, 80), rng.normal(size=80)])  # one row with ties, one without
    small = delong(y, s)
    monkeypatch.setattr(module, "_INT32_MAX", 0)
    wide = delong(y, s)
    np.testing.assert_array_equal(wide.auc, small.auc)
    np.testing.assert_allclose(wide.cov, small.cov, rtol=0, atol=1e-15)
    auc, cov = naive_delong(y, s)
    np.testing.assert_allclose(wide.cov, cov, atol=1e-12)
