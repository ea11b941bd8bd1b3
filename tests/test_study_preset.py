"""`monai-cxr study`: synth + prepare + generate + run + report in one command, and a rerun redoes nothing."""

import json

import click
import pandas as pd
import pytest
from conftest import TINY_GRID

from monai_cxr.grid import presets
from monai_cxr.grid.settings import GridSettings
from monai_cxr.pipeline import run_study

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


def test_a_preset_study_runs_whole_and_resumes_as_a_no_op(tmp_path, monkeypatch, log_lines):
    tiny = presets.Preset(
        name="tiny",
        description="one cell on a tiny phantom",
        synthetic=True,
        phantom={"patients": 24, "size": 64, "seed": 0, "prevalence": 0.4, "workers": 1},
        grid=GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID),
    )
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny)
    lines = log_lines
    assert run_study("tiny", study_dir=tmp_path / "s", progress=False) == 0
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    assert study["synthetic"] is True and study["grid"]["cells"] == ["mass__resnet34__r16__s0"]
    summary = pd.read_csv(tmp_path / "s" / "report" / "summary.csv")
    assert summary["label"].tolist() == ["Mass"]
    run_json = tmp_path / "s" / "bundles" / "mass__resnet34__r16__s0" / "run.json"
    mtime = run_json.stat().st_mtime_ns

    lines.clear()
    assert run_study("tiny", study_dir=tmp_path / "s", progress=False) == 0
    assert run_json.stat().st_mtime_ns == mtime
    assert any("1 of 1 cells already finished" in line for line in lines)
    assert any("(0 written, 1 unchanged)" in line for line in lines)


def test_study_passes_the_executor_to_run(tmp_path, monkeypatch):
    from monai_cxr.cli import main
    from monai_cxr.run import executor

    tiny = presets.Preset(
        name="tiny",
        description="one cell on a tiny phantom",
        synthetic=True,
        phantom={"patients": 24, "size": 64, "seed": 0, "prevalence": 0.4, "workers": 1},
        grid=GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID),
    )
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny)
    seen = {}

    def fake_run_cells(study_dir, **kwargs):
        seen.update(kwargs)
        return executor.RunSummary()

    monkeypatch.setattr(executor, "run_cells", fake_run_cells)
    from monai_cxr.cli import cli

    (option,) = [p for p in cli.commands["study"].params if p.name == "preset"]
    monkeypatch.setattr(option, "type", click.Choice(["quick", "paper", "tiny"]))
    main(["study", "--preset", "tiny", "--study-dir", str(tmp_path / "s"), "--executor", "ray", "--address", "auto"])
    assert seen["executor"] == "ray" and seen["address"] == "auto"
