"""DeLongAUCMetric and its Ignite handler: same numbers as monai_cxr.stats, both logged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.handlers import StatsHandler

from monai_cxr.cell.metrics import DeLongAUC, DeLongAUCMetric
from monai_cxr.stats import delong


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.float32)
    y[:2], y[2:4] = 1, 0
    pred = np.round(rng.normal(size=n) + y, 1).astype(np.float32)  # rounded: ties across batches
    return torch.from_numpy(pred), torch.from_numpy(y)


def test_metric_accumulates_batches_of_both_shapes():
    pred, y = data()
    metric = DeLongAUCMetric()
    metric(y_pred=pred[:20].unsqueeze(1), y=y[:20].unsqueeze(1))  # (B, 1)
    metric(y_pred=pred[20:40], y=y[20:40])  # (B,)
    metric(y_pred=list(pred[40:50].unsqueeze(1)), y=list(y[40:50].unsqueeze(1)))  # decollated
    metric(y_pred=list(pred[50:].unsqueeze(1)), y=list(y[50:]))  # decollated, 0-d labels
    ref = delong(y.numpy(), pred.numpy())
    assert metric.aggregate() == pytest.approx(ref.auc[0], abs=1e-12)
    assert metric.compute_delong().se[0] == pytest.approx(ref.se[0], abs=1e-12)
    metric.reset()
    metric(y_pred=pred[:10], y=y[:10])
    assert metric.aggregate() == pytest.approx(delong(y[:10].numpy(), pred[:10].numpy()).auc[0])


def test_one_class_is_a_clear_value_error():
    metric = DeLongAUCMetric()
    metric(y_pred=torch.rand(8), y=torch.ones(8))
    with pytest.raises(ValueError, match="8 validation samples.*single class"):
        metric.aggregate()


def test_nothing_accumulated_is_a_clear_error():
    with pytest.raises(ValueError, match="no predictions"):
        DeLongAUCMetric().aggregate()


def test_prediction_and_truth_of_other_shapes_are_rejected():
    metric = DeLongAUCMetric()
    metric(y_pred=torch.rand(4, 2), y=torch.ones(4))
    with pytest.raises(ValueError, match=r"y_pred \(4, 2\) and y \(4, 1\) differ"):
        metric.aggregate()
    with pytest.raises(ValueError, match=r"\(B,\), \(B, 1\) or \(B, k\), got \(4, 2, 1\)"):
        DeLongAUCMetric()(y_pred=torch.rand(4, 2, 1), y=torch.ones(4, 2, 1))


def test_multilabel_key_metric_is_the_mean_auc_over_labels_without_unknowns():
    pred_a, y_a = data(n=60, seed=1)
    pred_b, y_b = data(n=60, seed=2)
    y_b[:10] = -1  # unknown for label 1: left out of its AUC only
    pred, y = torch.stack([pred_a, pred_b], 1), torch.stack([y_a, y_b], 1)
    engine = Engine(lambda engine, b: b)
    DeLongAUC().attach(engine, "val_auc")
    engine.run([(pred[:32], y[:32]), (pred[32:], y[32:])], max_epochs=1)
    ref_a, ref_b = delong(y_a.numpy(), pred_a.numpy()), delong(y_b[10:].numpy(), pred_b[10:].numpy())
    metrics = engine.state.metrics
    assert metrics["val_auc"] == pytest.approx((ref_a.auc[0] + ref_b.auc[0]) / 2, abs=1e-12)
    assert metrics["val_auc/1"] == pytest.approx(ref_b.auc[0]) and metrics["val_auc_se/0"] == pytest.approx(ref_a.se[0])
    assert "val_auc_se" not in metrics  # the labels share images: no DeLong SE of their mean here


def run_engine(pred, y, batch=16, epochs=1):
    batches = [(pred[i : i + batch].unsqueeze(1), y[i : i + batch].unsqueeze(1)) for i in range(0, len(y), batch)]
    engine = Engine(lambda engine, b: b)
    DeLongAUC().attach(engine, "val_auc")
    logged = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: logged.append(dict(e.state.metrics)))
    engine.run(batches, max_epochs=epochs)
    return engine, logged


def test_handler_puts_auc_and_se_in_state_metrics():
    pred, y = data(n=70)
    engine, logged = run_engine(pred, y, epochs=2)
    ref = delong(y.numpy(), pred.numpy())
    assert isinstance(engine.state.metrics["val_auc"], float)
    assert engine.state.metrics["val_auc"] == pytest.approx(ref.auc[0], abs=1e-12)
    assert engine.state.metrics["val_auc_se"] == pytest.approx(ref.se[0], abs=1e-12)
    assert len(logged) == 2 and logged[0] == logged[1]  # reset between epochs: same data, same numbers
    # checkpoint selection by the key metric reads the AUC itself
    assert Checkpoint.get_default_score_fn("val_auc")(engine) == engine.state.metrics["val_auc"]


def test_stats_handler_logs_both(capsys):
    pred, y = data()
    batches = [(pred[:32], y[:32]), (pred[32:], y[32:])]
    engine = Engine(lambda engine, b: b)
    DeLongAUC().attach(engine, "val_auc")
    StatsHandler(name="delong_test", iteration_log=False, output_transform=lambda x: None).attach(engine)
    engine.run(batches, max_epochs=1)
    text = capsys.readouterr().out
    ref = delong(y.numpy(), pred.numpy())
    assert f"val_auc: {ref.auc[0]:.4f}" in text and f"val_auc_se: {ref.se[0]:.4f}" in text


def test_handler_one_class_fails_loudly():
    engine = Engine(lambda engine, b: b)
    DeLongAUC().attach(engine, "val_auc")
    with pytest.raises(ValueError, match="single class"):
        engine.run([(torch.rand(6), torch.zeros(6))], max_epochs=1)
