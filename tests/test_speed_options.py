"""GPU speed options: set per study, written into each cell, recorded as requested and effective."""

import json

import pytest
import torch
from conftest import TINY_GRID, make_hand_study

from monai_cxr.cell.speed import SpeedOptions
from monai_cxr.cli import main
from monai_cxr.errors import CxrError
from monai_cxr.grid.settings import amp_mode
from monai_cxr.run.executor import run_cells

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`

ASKED = {"amp": "bf16", "channels_last": True, "cudnn_benchmark": True, "pin_memory": True, "num_workers": 1}
OFF = {"amp": "off", "channels_last": False, "cudnn_benchmark": False, "pin_memory": False}


def test_on_a_cpu_gpu_options_are_off_and_workers_kept():
    speed = SpeedOptions("cpu", **ASKED)
    assert speed.requested == ASKED
    assert speed.effective == {**OFF, "num_workers": 1}
    assert (speed.amp, speed.amp_kwargs, speed.pin_memory) == (False, {}, False)
    assert speed.memory_format == torch.contiguous_format
    benchmark = torch.backends.cudnn.benchmark
    speed.apply()
    assert torch.backends.cudnn.benchmark == benchmark
    assert speed.record() == {"requested": ASKED, "effective": {**OFF, "num_workers": 1}}


def test_amp_accepts_the_old_flag_values_and_refuses_others():
    assert [amp_mode(v) for v in (True, False, None, "BF16", "fp16", "off")] == [
        "fp16",
        "off",
        "off",
        "bf16",
        "fp16",
        "off",
    ]
    with pytest.raises(CxrError, match="'fp8' is not one of off, fp16, bf16"):
        amp_mode("fp8")


def generate_args(study):
    return [
        "generate",
        "--study-dir",
        str(study),
        "--labels",
        "Mass",
        "--resolutions",
        "16",
        *[f"--{k.replace('_', '-')}={v}" for k, v in TINY_GRID.items() if k != "learning_rate"],
    ]


def test_generate_records_options_in_the_grid_and_each_cell_and_run_json_records_both(tmp_path):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12)
    main(generate_args(study) + ["--amp", "fp16"])
    assert json.loads((study / "study.json").read_text())["grid"]["amp"] == "fp16"

    main(
        generate_args(study)
        + ["--amp", "bf16", "--channels-last", "--cudnn-benchmark", "--pin-memory", "--loader-workers", "1"]
    )
    grid = json.loads((study / "study.json").read_text())["grid"]  # recorded under the option's name
    assert {k: grid[k] for k in ASKED if k != "num_workers"} == {k: v for k, v in ASKED.items() if k != "num_workers"}
    assert grid["loader_workers"] == 1 and "num_workers" not in grid
    cell = study / "bundles" / "mass__resnet34__r16__s0"
    config = json.loads((cell / "configs" / "override.json").read_text())
    assert {k: config[k] for k in ASKED} == ASKED

    assert run_cells(study, progress=False).ok
    run = json.loads((cell / "run.json").read_text())
    assert run["speed"] == {"requested": ASKED, "effective": {**OFF, "num_workers": 1}}
    assert run["amp"] == "bf16" and run["device"] == "cpu"


@pytest.mark.parametrize("amp", [["--amp", "fp8"], ["--amp"]])  # a bare --amp no longer means fp16
def test_an_unknown_or_missing_amp_mode_is_a_usage_error(tmp_path, amp):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12)
    with pytest.raises(SystemExit) as exit_info:
        main(generate_args(study) + amp)
    assert exit_info.value.code == 2
    assert not (study / "bundles").exists()
