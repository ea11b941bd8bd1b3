"""`generate --batch-size auto`: each resolution trains with the largest batch its memory budget allows."""

import json

import pandas as pd
import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.cli import main
from monai_cxr.errors import CxrError
from monai_cxr.grid.probe import CSV_COLUMNS, ProbeResult, _max_batch, resolve_batch_sizes
from monai_cxr.grid.settings import GridSettings


def write_probe_table(path, per_image_mb: dict[int, float], budget_mb: float = 1000.0, fixed_mb: float = 300.0):
    """A `probe --out` table for resnet34 (as made on a training device), memory per image by resolution."""
    rows = [
        ProbeResult("resnet34", r, "cuda:0", budget_mb, fixed_mb, mb, _max_batch(fixed_mb, mb, budget_mb))
        for r, mb in per_image_mb.items()
    ]
    pd.DataFrame([{c: getattr(row, c) for c in CSV_COLUMNS} for row in rows]).to_csv(path, index=False)
    return path


def test_auto_batches_shrink_with_resolution_and_reach_each_cell(tmp_path):
    table = write_probe_table(tmp_path / "probe.csv", {16: 2.0, 32: 8.0})
    settings = GridSettings(
        labels=["Mass"],
        resolutions=[16, 32],
        **{**TINY_GRID, "subsample": 512, "batch_size": "auto", "probe_table": str(table)},
    )
    settings = resolve_batch_sizes(settings)
    # (1000 - 300) / 2 = 350 -> 344 (a multiple of 8); (1000 - 300) / 8 = 87 -> 80
    assert settings.batch_sizes == {"resnet34@16": 344, "resnet34@32": 80}
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2}, resolutions=(16, 32))
    main(
        [
            "generate",
            "--study-dir",
            str(study),
            "--labels",
            "Mass",
            "--resolutions",
            "16,32",
            "--epochs",
            "1",
            "--subsample",
            "512",
            "--batch-size",
            "auto",
            "--probe-table",
            str(table),
        ]
    )
    batches = {
        r: json.loads((study / f"bundles/mass__resnet34__r{r}__s0/configs/override.json").read_text())["batch_size"]
        for r in (16, 32)
    }
    assert batches == {16: 344, 32: 80}
    grid = json.loads((study / "study.json").read_text())["grid"]
    assert grid["batch_size"] == "auto" and grid["batch_sizes"] == {"resnet34@16": 344, "resnet34@32": 80}


def test_a_smaller_budget_gives_smaller_batches(tmp_path):
    table = write_probe_table(tmp_path / "probe.csv", {16: 2.0, 32: 8.0})
    big, small = (
        resolve_batch_sizes(
            GridSettings(
                labels=["Mass"], resolutions=[16, 32], batch_size="auto", probe_table=str(table), memory_budget=budget
            )
        )
        for budget in ("1000MiB", "400MiB")
    )
    assert all(small.batch_sizes[k] < big.batch_sizes[k] for k in big.batch_sizes)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": "auto"}, "--batch-size auto needs --memory-budget"),
        ({"batch_size": 16, "memory_budget": "1GiB"}, "--memory-budget and --probe-table go with --batch-size auto"),
        ({"batch_size": 64, "subsample": 32}, "subsample 32 is smaller than the batch size 64"),
    ],
)
def test_impossible_batch_settings_are_one_line(kwargs, message):
    with pytest.raises(CxrError, match=message):
        GridSettings(labels=["Mass"], resolutions=[16], **kwargs).check()


def test_a_budget_too_small_for_two_images_names_the_cell(tmp_path):
    table = write_probe_table(tmp_path / "probe.csv", {16: 2.0, 32: 8.0})
    with pytest.raises(CxrError, match="resnet34 at 32 px does not fit"):
        resolve_batch_sizes(
            GridSettings(
                labels=["Mass"], resolutions=[16, 32], batch_size="auto", probe_table=str(table), memory_budget="310MiB"
            )
        )


def test_batch_size_option_takes_a_number_or_auto(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "generate",
                "--study-dir",
                str(tmp_path),
                "--labels",
                "Mass",
                "--resolutions",
                "16",
                "--batch-size",
                "large",
            ]
        )
    assert "'large' is not a whole number or auto" in capsys.readouterr().err
