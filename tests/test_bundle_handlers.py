"""The bundle's Ignite handlers on toy engines: loss read back rarely, predictions per batch, progress lines."""

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events

from monai_cxr.cell.handlers import PredictionSaver, TrainingLog


class Counted(torch.Tensor):
    """A tensor that counts how often its value is read back to Python (``float``, ``item``, ``tolist``)."""

    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist):
            cls.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


LOSSES = [float(i % 7) / 3 for i in range(20)]


def trainer():
    def step(engine, batch):
        return {"loss": torch.tensor(LOSSES[engine.state.iteration - 1]).as_subclass(Counted)}

    return Engine(step)


def test_the_loss_is_read_back_per_line_not_per_step_and_the_epoch_mean_is_exact(log_lines):
    engine = trainer()
    TrainingLog(every=5, seconds=0, progress_bar=False).attach(engine)
    means = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: means.append(e.state.metrics["train_loss"]))
    Counted.reads = 0
    engine.run([{"label": torch.zeros(4, 1)}] * 10, max_epochs=2)
    assert Counted.reads == 4  # 20 steps, a line every 5 iterations
    assert means == pytest.approx([sum(LOSSES[:10]) / 10, sum(LOSSES[10:]) / 10])
    lines = list(log_lines)
    assert [line.split("  loss")[0] for line in lines if "  loss " in line] == [
        "epoch 1/2  iteration 5/10",
        "epoch 1/2  iteration 10/10",
        "epoch 2/2  iteration 5/10",
        "epoch 2/2  iteration 10/10",
    ]
    assert f"loss {sum(LOSSES[5:10]) / 5:.4f}  " in lines[1] and "ETA 0:00:00" in lines[-2]
    assert lines[2].startswith(f"epoch 1/2: train_loss {means[0]:.4f} (mean of 10 iterations)")


def test_on_a_terminal_the_progress_bar_shows_the_figures_and_no_lines_are_logged(log_lines):
    engine = trainer()
    log = TrainingLog(every=5, seconds=0, progress_bar=True)
    log.attach(engine)
    engine.run([{"label": torch.zeros(4, 1)}] * 10, max_epochs=1)
    assert not [line for line in log_lines if "  loss " in line] and "train_loss" in log_lines[-1]
    assert log.postfix["loss"] == pytest.approx(sum(LOSSES[5:10]) / 5)


@pytest.mark.parametrize("decollated", [False, True])
def test_predictions_are_collected_per_batch_and_written_with_their_fold(tmp_path, decollated):
    batches = [
        {"image_id": ["a", "b"], "patient_id": ["p", "p"], "fold": ["val", "val"]},
        {"image_id": ["c"], "patient_id": ["q"], "fold": ["test"]},
    ]
    scores = [torch.tensor([[0.25], [0.5]]), torch.tensor([[0.75]])]
    labels = [torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0]])]

    def step(engine, batch):
        i = engine.state.iteration - 1
        pred, label = scores[i].as_subclass(Counted), labels[i].as_subclass(Counted)
        if decollated:
            return [{"pred": p, "label": y} for p, y in zip(pred, label)]
        return {"pred": pred, "label": label}

    engine = Engine(step)
    PredictionSaver(str(tmp_path / "p.csv")).attach(engine)
    Counted.reads = 0
    engine.run(batches, max_epochs=1)
    assert Counted.reads == 2  # scores and labels read back once each per run, never sample by sample
    written = pd.read_csv(tmp_path / "p.csv")
    assert written.to_dict("list") == {
        "image_id": ["a", "b", "c"],
        "patient_id": ["p", "p", "q"],
        "fold": ["val", "val", "test"],
        "label": [1, 0, 1],
        "score": [0.25, 0.5, 0.75],
    }
