"""`monai-cxr run` and `study`: cells in their own processes, resumable, failures reported."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import TINY_GRID

from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.run.executor import run_cells
from monai_cxr.studydir import CELL_FILES, config_hash

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`

CLI = [sys.executable, "-c", "from monai_cxr.cli import main; main()"]


def snapshot(cell):
    """Contents and modification times of a finished cell's results."""
    files = [cell / "run.json", cell / "predictions.csv", cell / "models" / "model.pt"]
    return {f.name: (f.stat().st_mtime_ns, f.read_bytes() if f.suffix != ".pt" else f.stat().st_size) for f in files}


def test_tiny_study_end_to_end_survives_kill_9_and_resumes(study_copy, capsys):
    generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16, 32], **TINY_GRID))
    first = study_copy / "bundles" / "mass__resnet34__r16__s0"
    second = study_copy / "bundles" / "mass__resnet34__r32__s0"

    # kill -9 the whole study while the second cell is running
    proc = subprocess.Popen(
        [*CLI, "run", "--study-dir", str(study_copy)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not ((first / "run.json").exists() and (second / "logs" / "run.log").exists()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(second / ".lock") as lock:  # the killed bundle process is gone once its lock is free
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    assert not (second / "run.json").exists()
    finished = snapshot(first)

    main(["run", "--study-dir", str(study_copy)])  # resumes: returns normally when every cell finished
    out = capsys.readouterr().out
    assert "1 of 2 cells already finished" in out and "1 finished, 1 skipped" in out
    assert snapshot(first) == finished  # never recomputed
    assert (second / "run.json").is_file()

    for cell, resolution in ((first, 16), (second, 32)):
        run = json.loads((cell / "run.json").read_text())
        assert (run["label"], run["arch"], run["resolution"], run["seed"]) == ("Mass", "resnet34", resolution, 0)
        for key in (
            "batch_size",
            "epochs",
            "train_seconds",
            "images_per_s",
            "peak_mem_mb",
            "best_val_auc",
            "best_epoch",
            "device",
        ):
            assert run[key] is not None
        predictions = pd.read_csv(cell / "predictions.csv")
        assert list(predictions.columns) == ["image_id", "patient_id", "fold", "label", "score"]

    from monai_cxr.report import make_report

    report = make_report(study_copy)
    summary = pd.read_csv(report / "summary.csv")
    assert sorted(summary["resolution"]) == [16, 32]


def test_a_failed_cell_is_reported_with_its_log_and_exit_1(study_copy, capsys):
    generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16, 32], **TINY_GRID))
    done = study_copy / "bundles" / "mass__resnet34__r16__s0"
    (done / "predictions.csv").write_text("")
    (done / "run.json").write_text("{}")
    broken = study_copy / "bundles" / "mass__resnet34__r32__s0"
    override = json.loads((broken / "configs" / "override.json").read_text())
    override["cache_file"] = str(study_copy / "missing.npy")
    (broken / "configs" / "override.json").write_text(json.dumps(override))
    inputs = json.loads((broken / "inputs.json").read_text())  # as generate would record it: not an edit
    inputs["config"] = config_hash({name: (broken / name).read_text() for name in CELL_FILES})
    (broken / "inputs.json").write_text(json.dumps(inputs))

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--study-dir", str(study_copy)])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    # the one-line reason from the end of the log's traceback (a CxrError under MONAI's wrapping), then the log
    reason = f"resize cache not found: {study_copy / 'missing.npy'}"
    assert f"FAILED  mass__resnet34__r32__s0 (exit 1): {reason}; log: {broken / 'logs' / 'run.log'}" in out
    assert "0 finished, 1 skipped, 1 failed" in out
    assert "missing.npy" in (broken / "logs" / "run.log").read_text()
    assert not (broken / "run.json").exists()


def test_a_cell_locked_by_another_run_is_left_alone(study_copy):
    generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    cell = study_copy / "bundles" / "mass__resnet34__r16__s0"
    with open(cell / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        summary = run_cells(study_copy, progress=False)
    assert summary.busy == [cell.name] and not summary.ok and not summary.failed
    assert not (cell / "logs").exists()


def test_run_without_a_grid_and_paper_without_data_are_one_line_errors(study_copy):
    for args, message in (
        (["run", "--study-dir", str(study_copy)], "has no generated grid"),
        (["study", "--preset", "paper", "--study-dir", str(study_copy / "p")], "needs --data-dir"),
    ):
        proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1


def test_an_interrupted_runner_stops_its_cell_process_and_releases_the_lock(study_copy):
    from monai_cxr.run.cell import run_cell

    generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    cell = study_copy / "bundles" / "mass__resnet34__r16__s0"
    seen = []

    def interrupt(proc):
        seen.append(proc)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, on_start=interrupt)
    assert seen[0].poll() is not None  # the cell's process was stopped, not left running
    with open(cell / ".lock") as f:  # and its lock is free again
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (cell / "run.json").exists()


@pytest.mark.parametrize(
    "log, reason",
    [
        (  # a user's mistake wrapped by MONAI's config parser: the CxrError, not the wrapper
            "Traceback (most recent call last):\n  File ...\nmonai_cxr.errors.CxrError: pretrained weights file w.pt "
            "holds no tensors; allowed: ...\n\nThe above exception was the direct cause of the following exception:\n"
            "RuntimeError: Failed to instantiate component 'x' with keywords: network,path\n",
            "pretrained weights file w.pt holds no tensors; allowed: ...",
        ),
        (  # anything else: the last exception line, rank prefixes of torchrun dropped
            "epoch 1/2: train_loss 0.7\n[rank0]: Traceback (most recent call last):\n"
            "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n",
            "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        ("epoch 1/2: train_loss 0.7\nKilled\n", ""),  # no exception: no reason, the log says the rest
    ],
)
def test_the_reason_a_cell_failed_is_the_last_error_line_of_its_log(tmp_path, log, reason):
    from monai_cxr.run.cell import failure_reason

    path = tmp_path / "run.log"
    path.write_text(log)
    assert failure_reason(path) == reason
    assert failure_reason(tmp_path / "absent.log") == ""
