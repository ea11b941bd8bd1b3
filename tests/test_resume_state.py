"""What a resumed cell keeps and restores, without training: checkpoint names, leftovers, sampler and random streams."""

import random
import sys

import numpy as np
import torch
from conftest import make_hand_study

import monai_cxr.run.cell as run_module
from monai_cxr.cell.resume import RandomStates
from monai_cxr.cell.sampling import SubsampleSampler
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.studydir import resume_file, resume_fingerprint

SETTINGS = dict(labels=["Mass"], resolutions=[16], epochs=3, batch_size=4, subsample=8)


def test_the_checkpoint_name_follows_what_the_cell_trains_with(tmp_path):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2})
    (cell,) = generate(study, GridSettings(**SETTINGS))
    name = resume_file(cell)
    assert name.parent == cell / "models" and name.name == f"resume-{resume_fingerprint(cell)[:16]}.pt"
    assert resume_file(cell) == name and resume_file(cell, world_size=2) != name
    (cell / "docs" / "README.md").write_text("a document is not a setting\n")
    assert resume_file(cell) == name
    generate(study, GridSettings(**{**SETTINGS, "learning_rate": 2e-3}))  # unfinished: rewritten in place
    assert resume_file(cell) != name


def test_run_keeps_what_an_interrupted_run_of_the_same_settings_resumes_from(tmp_path, monkeypatch):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2})
    (cell,) = generate(study, GridSettings(**SETTINGS))
    monkeypatch.setattr(run_module, "bundle_command", lambda *a, **k: [sys.executable, "-c", "print('after')"])

    def leftovers():
        (cell / "models").mkdir(exist_ok=True)
        (cell / "logs").mkdir(exist_ok=True)
        (cell / "eval").mkdir(exist_ok=True)
        (cell / "models" / "model.pt").write_text("best so far")
        (cell / "logs" / "run.log").write_text("before\n")
        (cell / "predictions.csv").write_text("stale\n")

    leftovers()
    resume_file(cell).write_text("checkpoint")
    assert run_module.run_cell(cell).status == "failed"  # the stand-in command writes no run.json
    assert resume_file(cell).is_file() and (cell / "models" / "model.pt").is_file()
    assert (cell / "logs" / "run.log").read_text() == "before\nafter\n"  # the log goes on
    assert not (cell / "predictions.csv").exists() and not (cell / "eval").exists()

    # generated again with other settings: the old checkpoint no longer names this cell, everything goes
    old = resume_file(cell)
    generate(study, GridSettings(**{**SETTINGS, "batch_size": 2}))
    leftovers()
    old.write_text("checkpoint")
    assert run_module.run_cell(cell).status == "failed"
    assert not (cell / "models").exists() and (cell / "logs" / "run.log").read_text() == "after\n"


def test_a_sampler_loaded_from_its_state_draws_the_next_epoch():
    labels = [1] * 5 + [0] * 20
    running = SubsampleSampler(labels, num_samples=10, seed=7)
    list(running), list(running)
    resumed = SubsampleSampler(labels, num_samples=10, seed=7)
    resumed.load_state_dict(running.state_dict())
    assert resumed.state_dict() == {"epoch": 2}
    assert list(resumed) == list(running) == running.draw(2).tolist()


def test_random_streams_of_the_process_and_of_nested_random_transforms_are_restored():
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, RandAffined, RandGaussianNoised
    from monai.utils import set_determinism

    set_determinism(seed=0)
    transform = Compose([RandAffined("image", prob=0.5, rotate_range=0.3), RandGaussianNoised("image", prob=0.5)])
    loader = DataLoader(
        Dataset([{"image": np.ones((1, 8, 8), np.float32)}] * 4, transform),
        batch_size=2,
        generator=torch.Generator().manual_seed(1),
    )
    streams = RandomStates(loader)
    assert len(streams.owned()) >= 5  # each transform, the affine's own generators, the loader's

    def draw():
        batches = [batch["image"] for batch in loader]
        return torch.cat(batches), random.random(), np.random.rand(), torch.rand(1)  # noqa: NPY002

    state = streams.state_dict()
    first = draw()
    assert not torch.equal(draw()[0], first[0])  # the streams moved on
    streams.load_state_dict(state)
    again = draw()
    assert torch.equal(again[0], first[0]) and again[1:3] == first[1:3] and torch.equal(again[3], first[3])


def test_a_checkpoint_of_other_settings_is_discarded_and_one_of_the_same_goes_on(tmp_path, log_lines):
    from ignite.engine import Engine

    from monai_cxr.cell.resume import ResumeCheckpoint

    def run(settings, best=(0.5, 1)):
        network = torch.nn.Linear(2, 1)
        trainer = Engine(lambda engine, batch: network.bias.data.add_(1.0))
        evaluator, scorer = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = best
        ResumeCheckpoint(str(tmp_path), {"network": network}, evaluator, scorer, settings=settings).attach(trainer)
        trainer.run([0, 1], max_epochs=settings["epochs"])
        return network.bias.item(), trainer.state.iteration, evaluator.state.best_metric_epoch

    run({"epochs": 1, "seed": 0})
    assert resume_file(tmp_path).is_file()  # kept: the scorer never completed
    _, iterations, _ = run({"epochs": 2, "seed": 0}, best=(0.7, 2))  # other settings: from epoch 0
    assert iterations == 4 and "discarding models/" in log_lines[-1] and "other settings (epochs)" in log_lines[-1]
    bias = torch.load(resume_file(tmp_path), weights_only=True)["objects"]["network"]["bias"].item()
    assert run({"epochs": 2, "seed": 0}, best=(0.0, -1)) == (bias, 4, 2)  # the same settings: nothing left to train
    assert log_lines[-1] == f"resuming from epoch 2 of 2 (models/{resume_file(tmp_path).name})"
