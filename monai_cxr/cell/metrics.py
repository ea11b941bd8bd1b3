"""AUC with its DeLong standard error, as a MONAI cumulative metric and an Ignite handler.

The same pattern as ``monai.metrics.ROCAUCMetric`` + ``monai.handlers.ROCAUC``: the
metric stores every validation prediction and label, and the handler computes the AUC
once per validation run. The handler puts the AUC in ``engine.state.metrics[name]`` (so
``key_val_metric`` / ``CheckpointSaver`` select checkpoints by it) and the DeLong SE in
``engine.state.metrics[name + "_se"]``, so ``StatsHandler`` and ``TensorBoardStatsHandler``
log both. The statistics are :func:`monai_cxr.stats.delong`.
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

    def compute_delong(self) -> DeLongResult:
        """AUC, variance, SE and CI of everything accumulated since the last reset.

        Raises:
            ValueError: nothing accumulated, one class only (or fewer than 2 cases of a
                class), labels other than 0/1, or non-finite predictions.
        """
        buffers = self.get_buffer()
        if not isinstance(buffers, (list, tuple)) or len(buffers) != 2 or buffers[0] is None:
            raise ValueError("DeLongAUCMetric has no predictions: call it on (y_pred, y) before aggregate().")
        y_pred, y = (b.detach().cpu().to(torch.float64).numpy() for b in buffers)
        try:
            return delong(y, y_pred, level=self.level)
        except ValueError as exc:
            raise ValueError(f"DeLongAUCMetric on {len(y)} validation samples: {exc}") from None

    def aggregate(self) -> float:  # type: ignore[override]
        """The AUC (a float, like ``ROCAUCMetric.aggregate`` for binary data)."""
        return float(self.compute_delong().auc[0])


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
        super().__init__(metric_fn=DeLongAUCMetric(level=level), output_transform=output_transform,
                         save_details=False)
        self._se: float | None = None

    def compute(self) -> float:
        result = self.metric_fn.compute_delong()  # type: ignore[attr-defined]
        self._is_reduced = True
        self._se = float(result.se[0])
        return float(result.auc[0])

    def completed(self, engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics[f"{name}_se"] = self._se


def _one_per_sample(x: torch.Tensor, what: str) -> torch.Tensor:
    """Shape (B,) or (B, 1) to (B,); anything else is a clear error (this AUC is binary)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 1:
        return x
    raise ValueError(f"DeLongAUCMetric is binary: {what} must have shape (B,) or (B, 1), got {tuple(x.shape)}.")
