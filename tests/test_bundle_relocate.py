"""A study is relocatable: a copy elsewhere (even under a path with '#') runs and reports there, and only there."""

import hashlib
import shutil

import pandas as pd
import pytest
from conftest import TINY_GRID

from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.report import make_report
from monai_cxr.run.executor import run_cells

pytestmark = pytest.mark.slow  # trains a cell: left out of `make test-fast`


def contents(root):
    """Every file under ``root`` by relative path, with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_copied_study_runs_and_reports_in_the_copy_and_leaves_the_original_alone(study_copy, tmp_path, log_lines):
    grid = dict(labels=["Mass"], **TINY_GRID)
    generate(study_copy, GridSettings(resolutions=[16], **grid))
    assert run_cells(study_copy, progress=False).finished == ["mass__resnet34__r16__s0"]
    original = contents(study_copy)

    copy = tmp_path / "moved#2" / "study"  # `cp -r study elsewhere`
    shutil.copytree(study_copy, copy)
    log_lines.clear()
    generate(copy, GridSettings(resolutions=[16], **grid))  # the same settings: nothing to do, no --force
    assert "(0 written, 1 unchanged)" in log_lines[-1]

    generate(copy, GridSettings(resolutions=[16, 32], **grid))  # one cell more, run in the copy
    summary = run_cells(copy, progress=False)
    assert summary.finished == ["mass__resnet34__r32__s0"] and summary.skipped == ["mass__resnet34__r16__s0"]
    make_report(copy)
    assert sorted(pd.read_csv(copy / "report" / "summary.csv")["resolution"]) == [16, 32]
    new = copy / "bundles" / "mass__resnet34__r32__s0"
    assert all((new / name).is_file() for name in ("run.json", "predictions.csv", "models/model.pt"))

    assert contents(study_copy) == original  # every byte of the original as it was, and no file more
