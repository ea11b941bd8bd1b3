"""A cell killed in the middle of training goes on after its last saved epoch and ends as if never interrupted."""

import json

import pytest
import torch
from conftest import make_hand_study

import monai_cxr.run.cell as run_module
from monai_cxr.grid.generate import GridSettings, clear_run_outputs, generate
from monai_cxr.run.cell import run_cell
from monai_cxr.studydir import resume_file

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`

# 2 iterations an epoch; random augmentation on, so the transforms' random streams must be resumed too
SETTINGS = dict(labels=["Mass"], resolutions=[16], epochs=3, batch_size=4, subsample=8, augment_prob=0.5)
# test only: SIGKILL the cell's process after the first iteration of epoch 2 (epoch 1's checkpoint is saved)
KILL = {
    "imports": ["$import os", "$import signal", "$import torch", "$import monai", "$from ignite.engine import Events"],
    "run": [
        "$@train#trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), "
        "lambda engine: os.kill(os.getpid(), signal.SIGKILL))",
        "$@train#trainer.run()",
        "$@score#evaluator.run()",
    ],
}


def result(cell):
    run = json.loads((cell / "run.json").read_text())
    keys = ("best_val_auc", "best_val_auc_se", "best_epoch", "epochs", "iterations", "train_images")
    return {key: run[key] for key in keys}, (cell / "predictions.csv").read_text(), run


@pytest.mark.parametrize("loader_workers", [0, 2])
def test_a_killed_cell_resumes_after_its_last_epoch_and_ends_as_an_uninterrupted_run(
    tmp_path, monkeypatch, loader_workers
):
    """With loader workers too: the augmentation runs in prepare_batch, in the training process, from its own
    saved generator, and the sampler draws each epoch from (seed, epoch) in the main process."""
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: (i // 3) % 2}, n_patients=16)
    (cell,) = generate(study, GridSettings(**SETTINGS, loader_workers=loader_workers))
    models = cell / "models"

    # a checkpoint of other settings (here: another fingerprint) is discarded with a line, never loaded
    stale = {"fingerprint": "0" * 64, "settings": {}, "objects": {}, "random": [], "torch_threads": 1}
    models.mkdir()
    torch.save(stale, resume_file(cell))
    torch.save(stale, models / "resume-0123456789abcdef.pt")
    assert run_cell(cell).status == "finished"
    log = (cell / "logs" / "run.log").read_text()
    assert log.count("discarding models/resume-") == 2 and "resuming from epoch" not in log
    uninterrupted, predictions, run = result(cell)
    assert run["resumed_from_epoch"] is None
    assert not list(models.glob("resume-*.pt"))  # removed once run.json is written

    # the same cell from scratch, killed during epoch 2
    clear_run_outputs(cell)
    command = run_module.bundle_command
    (tmp_path / "kill.json").write_text(json.dumps(KILL))
    configs = repr(["configs/train.json", "configs/override.json", str(tmp_path / "kill.json")])
    monkeypatch.setattr(run_module, "bundle_command", lambda *a, **k: [*command(*a, **k)[:-1], configs])
    assert run_cell(cell).status == "failed"
    assert not (cell / "run.json").exists()
    saved = torch.load(resume_file(cell), map_location="cpu", weights_only=True)
    assert saved["objects"]["trainer"]["iteration"] == 2 and saved["objects"]["sampler"] == {"epoch": 1}
    (cell / "eval").mkdir()  # a leftover result of the interrupted run's cell is not kept
    monkeypatch.undo()

    # run again: it goes on after epoch 1 and ends exactly as the uninterrupted run
    assert run_cell(cell).status == "finished"
    resumed, resumed_predictions, run = result(cell)
    assert run["resumed_from_epoch"] == 1
    assert resumed == uninterrupted
    assert resumed_predictions == predictions
    assert len(run["epoch_images_per_s"]) == 3 and run["train_seconds"] > 0
    log = (cell / "logs" / "run.log").read_text()
    assert "epoch 1/3: val_auc " in log.split("resuming from epoch 1 of 3")[0]  # the killed run's log is kept
    assert log.count("epoch 2/3: val_auc ") == 1  # epoch 2 was not finished before the kill
    assert not list(models.glob("resume-*.pt")) and (models / "model.pt").is_file()
    assert not (cell / "eval").exists()
