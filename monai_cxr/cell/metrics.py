"""AUC with its DeLong standard error, as a MONAI cumulative metric and an Ignite handler.

The same pattern as ``monai.metrics.ROCAUCMetric`` + ``monai.handlers.ROCAUC``: the
metric stores every validation prediction and label, and the handler computes the AUC
once per validation run. The handler puts the AUC in ``engine.state.metrics[name]`` (so
``key_val_metric`` / ``CheckpointSaver`` select checkpoints by it) and the DeLong SE in
``engine.state.metrics[name + "_se"]``, so ``StatsHandler`` and ``TensorBoardStatsHandler``
log both. The statistics are :func:`monai_cxr.stats.delong`.

A multi-label cell has k outputs and k-vector labels (-1: unknown, left out of that label's AUC): its key
metric is the mean of the k labels' AUCs (what selects its checkpoint); each label's AUC and SE are logged as
``name/j`` and ``name_se/j`` (j the label's position), and ``name_se`` is left out (the labels' AUCs share images,
so their mean has no DeLong SE here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from monai_cxr.stats import DeLongResult, delong

__all__ = ["DeLongAUC", "DeLongAUCMetric"]


class DeLongAUCMetric(CumulativeIterationMetric):
    """Binary ROC AUC with DeLong's variance, accumulated over iterations.

    ``y_pred`` is one score per sample, shape ``(B,)`` or ``(B, 1)`` (a probability or a
    logit: the AUC depends only on the order, and a higher score means positive); ``y``
    is the 0/1 truth of the same shape. Both may also be lists of channel-first tensors.
    With k labels both are ``(B, k)``; ``y`` is 1, 0 or -1 (unknown: that entry is left out);
    see :meth:`compute_labels`.

    Args:
        level: confidence level of the interval in :meth:`compute_delong`'s result.

    Example::

        metric = DeLongAUCMetric()
        for batch in loader:
            metric(y_pred=model(batch["image"]).sigmoid(), y=batch["label"])
        auc = metric.aggregate()           # float, like ROCAUCMetric
        se = metric.compute_delong().se[0]
        metric.reset()
    """

    def __init__(self, level: float = 0.95) -> None:
        super().__init__()
        self.level = level

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None):  # type: ignore[override]
        if y is None:
            raise ValueError("DeLongAUCMetric needs the ground truth y.")
        return _one_per_sample(y_pred, "y_pred"), _one_per_sample(y, "y")

    def compute_labels(self) -> list[DeLongResult]:
        """One DeLong result per label (column) of everything accumulated since the last reset.

        Raises:
            ValueError: nothing accumulated, a label with one class only (or fewer than 2 cases
                of a class), labels other than 0/1/-1, or non-finite predictions.
        """
        buffers = self.get_buffer()
        if not isinstance(buffers, (list, tuple)) or len(buffers) != 2 or buffers[0] is None:
            raise ValueError("DeLongAUCMetric has no predictions: call it on (y_pred, y) before aggregate().")
        y_pred, y = (b.detach().cpu().to(torch.float64).numpy().reshape(len(b), -1) for b in buffers)
        if y_pred.shape != y.shape:
            raise ValueError(f"DeLongAUCMetric: y_pred {y_pred.shape} and y {y.shape} differ in shape")
        out = []
        for j in range(y.shape[1]):
            known = y[:, j] >= 0 if y.shape[1] > 1 else slice(None)  # a binary cell has no unknowns to drop
            try:
                out.append(delong(y[known, j], y_pred[known, j], level=self.level))
            except ValueError as exc:
                which = f", label {j}" if y.shape[1] > 1 else ""
                raise ValueError(f"DeLongAUCMetric on {len(y)} validation samples{which}: {exc}") from None
        return out

    def compute_delong(self) -> DeLongResult:
        """AUC, variance, SE and CI of everything accumulated since the last reset (one label).

        Raises:
            ValueError: as :meth:`compute_labels`, or more than one label.
        """
        results = self.compute_labels()
        if len(results) != 1:
            raise ValueError(f"DeLongAUCMetric.compute_delong is for one label; use compute_labels for {len(results)}")
        return results[0]

    def aggregate(self) -> float:  # type: ignore[override]
        """The AUC (a float, like ``ROCAUCMetric.aggregate`` for binary data); the mean over labels for k labels."""
        return float(np.mean([r.auc[0] for r in self.compute_labels()]))


class DeLongAUC(IgniteMetricHandler):
    """Ignite handler for :class:`DeLongAUCMetric`: the AUC under ``name``, its SE under ``name + "_se"``.

    Args:
        level: confidence level (for :meth:`DeLongAUCMetric.compute_delong`).
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, as in
            ``monai.handlers.ROCAUC`` (e.g. ``monai.handlers.from_engine(["pred", "label"])``).

    Example::

        evaluator = SupervisedEvaluator(..., key_val_metric={
            "val_auc": DeLongAUC(output_transform=from_engine(["pred", "label"]))})
        # after a run: evaluator.state.metrics == {"val_auc": 0.87, "val_auc_se": 0.012, ...}
    """

    def __init__(self, level: float = 0.95, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=DeLongAUCMetric(level=level), output_transform=output_transform, save_details=False)
        self._results: list[DeLongResult] = []

    def compute(self) -> float:
        self._results = self.metric_fn.compute_labels()  # type: ignore[attr-defined]
        self._is_reduced = True
        return float(np.mean([r.auc[0] for r in self._results]))

    def completed(self, engine, name: str) -> None:
        super().completed(engine, name)
        if len(self._results) == 1:
            engine.state.metrics[f"{name}_se"] = float(self._results[0].se[0])
            return
        for j, result in enumerate(self._results):
            engine.state.metrics[f"{name}/{j}"] = float(result.auc[0])
            engine.state.metrics[f"{name}_se/{j}"] = float(result.se[0])


def _one_per_sample(x: torch.Tensor, what: str) -> torch.Tensor:
    """Shape (B,) or (B, 1) to (B,), (B, k) as it is; anything else is a clear error."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim in (1, 2):
        return x
    raise ValueError(f"DeLongAUCMetric: {what} must have shape (B,), (B, 1) or (B, k), got {tuple(x.shape)}.")
