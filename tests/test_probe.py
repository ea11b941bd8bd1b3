"""`monai-cxr probe`: a training step's memory grows with batch and resolution; the budget decides the batch.

The CPU numbers are traced tensor bytes, so they are the same on every run and under any load.
"""

import dataclasses

import pandas as pd
import pytest
import torch

from monai_cxr.cli import main
from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv
from monai_cxr.grid import probe
from monai_cxr.grid.probe import (
    CSV_COLUMNS,
    MIB,
    _LiveBytes,
    _max_batch,
    _step_trace,
    auto_batch_sizes,
    batch_for_budget,
    measure,
    parse_size,
    read_probe_csv,
)

BUDGET = 2**30
PAIRS = [("resnet34", 16), ("resnet34", 32), ("densenet121", 32)]
RESNET34_PARAM_MB = 21_279_809 * 4 / MIB  # one input channel, one output


@pytest.fixture(scope="module")
def measured():
    """The three small probes the tests share (a few seconds on one core)."""
    return {(a, r): measure(a, r, BUDGET, device="cpu") for a, r in PAIRS}


@pytest.fixture
def remeasured(measured, monkeypatch):
    """``probe.measure`` answered from ``measured`` at any budget: tests of the wiring need no new probe."""

    def fake(arch, resolution, budget, device=None, batch_sizes=None, defs=None):
        res = measured[(arch, resolution)]
        return dataclasses.replace(
            res, budget_mb=budget / MIB, max_batch=_max_batch(res.fixed_mb, res.per_image_mb, budget / MIB)
        )

    monkeypatch.setattr(probe, "measure", fake)


pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


@pytest.mark.parametrize(
    "text,expected",
    [("16GiB", 16 * 2**30), ("80GB", 80 * 10**9), ("512MiB", 512 * 2**20), ("1.5g", int(1.5 * 2**30)), ("1000", 1000)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "16 parsecs", "-1GiB", "GiB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(CxrError, match="memory size"):
        parse_size(text)


def test_live_bytes_count_a_storage_once_and_release_it():
    with _LiveBytes() as live:
        x = torch.ones(1000)
        view = x[10:]
        x.add_(1)
        y = view * 2
        assert live.live == 4000 + 990 * 4
        del x, view
        assert live.live == 990 * 4
        del y
        assert live.live == 0


def test_the_cpu_probe_is_deterministic_and_says_when_nothing_fits(measured):
    again = measure("resnet34", 16, 256 * MIB, device="cpu")
    assert again == dataclasses.replace(measured[("resnet34", 16)], budget_mb=256, max_batch=0)
    assert "below the fixed part" in again.note and not measured[("resnet34", 16)].note


def test_memory_grows_with_resolution_and_depth(measured):
    r16, r32, d32 = measured[("resnet34", 16)], measured[("resnet34", 32)], measured[("densenet121", 32)]
    assert 0 < r16.per_image_mb < r32.per_image_mb < d32.per_image_mb
    assert 2.5 < r32.per_image_mb / r16.per_image_mb < 4.5  # about the pixel count (deep maps stop at 1x1)
    # the fixed part holds at least the weights and AdamW's two moments, at most those and the gradients
    assert 3 * RESNET34_PARAM_MB < r32.fixed_mb < 4.05 * RESNET34_PARAM_MB
    assert 0 < r32.max_batch < r16.max_batch


def test_the_fit_holds_beyond_the_probed_batches(measured):
    """At 16 images the peak has moved to another moment of the step: the line must still cover it."""
    r32 = measured[("resnet34", 32)]
    _, peak = _step_trace("resnet34", 32, 16, torch.device("cpu"))
    line = r32.fixed_mb + 16 * r32.per_image_mb
    assert line - RESNET34_PARAM_MB <= peak / MIB <= line


@pytest.mark.parametrize("pair", PAIRS)
def test_the_budget_sets_the_batch(measured, pair):
    res = measured[pair]
    batches = [batch_for_budget(res, mb * MIB, cap=10**9, multiple=1) for mb in (400, 600, 1024, 4096, 16384)]
    assert batches == sorted(batches) and batches[0] < batches[-1]
    for mb, b in zip((400, 600, 1024, 4096, 16384), batches):
        assert res.fixed_mb + res.per_image_mb * b <= mb < res.fixed_mb + res.per_image_mb * (b + 1)
    assert batches[2] == res.max_batch  # the probe's own budget


def test_auto_batch_sizes_shrink_with_resolution(measured, remeasured):
    sizes = auto_batch_sizes(["resnet34"], [16, 32], 400 * MIB)
    assert sizes[("resnet34", 16)] > sizes[("resnet34", 32)] >= 8
    assert all(b % 8 == 0 for b in sizes.values())
    assert auto_batch_sizes(["resnet34"], [16, 32], BUDGET) == {("resnet34", 16): 512, ("resnet34", 32): 512}
    assert auto_batch_sizes(["resnet34"], [32], BUDGET, cap=100) == {("resnet34", 32): 96}
    # between 2 and 8 images: no rounding
    r32 = measured[("resnet34", 32)]
    assert batch_for_budget(r32, (r32.fixed_mb + 5.5 * r32.per_image_mb) * MIB) == 5


def test_a_budget_below_two_images_is_a_one_line_error(measured):
    r32 = measured[("resnet34", 32)]
    with pytest.raises(CxrError, match="resnet34 at 32 px does not fit 300 MiB") as info:
        auto_batch_sizes(["resnet34"], [32], 300 * MIB, results=list(measured.values()))
    assert "\n" not in str(info.value)
    with pytest.raises(CxrError, match="a batch of 2 needs"):
        batch_for_budget(r32, (r32.fixed_mb + 1.5 * r32.per_image_mb) * MIB)


def test_the_table_round_trips_and_is_checked(measured, tmp_path):
    path = tmp_path / "probe.csv"
    write_csv(path, pd.DataFrame([r.row() for r in measured.values()]))
    assert read_probe_csv(path) == list(measured.values())
    sizes = auto_batch_sizes(["resnet34", "densenet121"], [32], BUDGET, results=read_probe_csv(path))
    assert sizes[("densenet121", 32)] < sizes[("resnet34", 32)]
    with pytest.raises(CxrError, match="no row for resnet34 at 64 px"):
        auto_batch_sizes(["resnet34"], [64], BUDGET, results=read_probe_csv(path))


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("max_batch", "99999", "does not follow"),
        ("per_image_mb", "0", "must be positive"),
        ("arch", "vgg16", "not one of"),
        ("resolution", "16", "does not take"),
        ("fixed_mb", "lots", "line 2"),
        ("budget_mb", None, "lacks column"),
        ("device", "cpu", "a second row"),
    ],
)
def test_read_probe_csv_refuses_a_bad_table(measured, tmp_path, column, value, message):
    frame = pd.DataFrame([r.row() for r in measured.values()], columns=list(CSV_COLUMNS)).astype(str)
    if value is None:
        frame = frame.drop(columns=[column])
    elif column == "device":  # resnet34 at 16 px twice
        frame = pd.concat([frame.iloc[:1], frame], ignore_index=True)
    else:  # the size check on densenet121's row (ResNet34 takes any size)
        frame.loc[2 if column == "resolution" else 0, column] = value
    write_csv(tmp_path / "probe.csv", frame)
    with pytest.raises(CxrError, match=message):
        read_probe_csv(tmp_path / "probe.csv")


def test_probe_command_writes_the_table(tmp_path, capsys, measured, remeasured):
    main(
        [
            "probe",
            "--archs",
            "resnet34",
            "--resolutions",
            "16",
            "--memory-budget",
            "1GiB",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "probe.csv"),
        ]
    )
    assert "lower bound" in capsys.readouterr().out
    (row,) = read_probe_csv(tmp_path / "probe.csv")
    assert (row.arch, row.resolution, row.device, row.budget_mb) == ("resnet34", 16, "cpu", 1024.0)
    assert row == measured[("resnet34", 16)]


def test_networks_of_an_arch_file_are_probed_and_sized_for_auto_batches(tmp_path, capsys):
    """probe --arch-file, then generate --batch-size auto with that table or measuring itself, same batches."""
    import json

    from conftest import TINY_GRID

    from monai_cxr.grid.probe import resolve_batch_sizes
    from monai_cxr.grid.settings import GridSettings

    tiny = {"_target_": "DenseNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1, "init_features": 8}
    tiny.update(growth_rate=4, block_config=[2, 2], bn_size=2)
    nets = tmp_path / "nets.json"
    nets.write_text(json.dumps({"tiny": tiny}))
    table = tmp_path / "probe.csv"
    args = ["probe", "--archs", "tiny", "--arch-file", str(nets), "--resolutions", "16,32", "--device", "cpu"]
    main([*args, "--memory-budget", "16MiB", "--out", str(table)])
    rows = read_probe_csv(table, {"tiny": tiny})
    assert [(r.arch, r.resolution) for r in rows] == [("tiny", 16), ("tiny", 32)]
    assert rows[0].per_image_mb < rows[1].per_image_mb and rows[1].max_batch < rows[0].max_batch
    with pytest.raises(CxrError, match="architecture 'tiny' is not one of resnet34, densenet121"):
        read_probe_csv(table)  # without the file the name means nothing
    grid = dict(TINY_GRID, subsample=4096, archs=["tiny"], arch_file=str(nets), batch_size="auto")
    from_table = resolve_batch_sizes(
        GridSettings(labels=["Mass"], resolutions=[16, 32], **grid, probe_table=str(table))
    )
    measured = resolve_batch_sizes(GridSettings(labels=["Mass"], resolutions=[16, 32], **grid, memory_budget="16MiB"))
    assert from_table.batch_sizes == measured.batch_sizes
    assert from_table.batch_sizes["tiny@32"] < from_table.batch_sizes["tiny@16"]


def test_probe_refuses_what_the_network_cannot_take():
    with pytest.raises(CxrError, match="below the 32 px"):
        measure("densenet121", 16, 2**30, device="cpu")
