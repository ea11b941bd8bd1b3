"""Small Ignite handlers used by the template bundle.

Each has ``attach(engine)``, as MONAI's handlers do, so the bundle lists them among
``train#handlers`` / ``validate#handlers``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from monai_cxr.fileio import write_csv, write_json

__all__ = ["LearningRateLogger", "PredictionSaver", "RunRecorder", "TerminalProgressBar", "peak_memory_mb"]


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, resident set size on a CPU."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class LearningRateLogger:
    """Put the learning rate of the epoch into ``engine.state.metrics`` (``"lr"``).

    StatsHandler and TensorBoardStatsHandler then log it with the other epoch values. List it
    before ``LrScheduleHandler`` so it records the rate the epoch was trained with.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "lr") -> None:
        self.optimizer = optimizer
        self.name = name

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        engine.state.metrics[self.name] = float(self.optimizer.param_groups[0]["lr"])


def _column(items, key):
    """Values of ``key`` from a batch or output: a dict of sequences or a list of dicts."""
    if isinstance(items, dict):
        values = items.get(key)
        return None if values is None else list(values)
    if items and all(isinstance(i, dict) and key in i for i in items):
        return [i[key] for i in items]
    return None


def _scalar(value) -> float:
    return float(torch.as_tensor(value).detach().float().reshape(-1)[0].cpu())


def _gather_rows(rows: dict[str, list]) -> dict[str, list] | None:
    """Rank 0: the rows of every rank, in dataset order; other ranks: None.

    Under ``torch.distributed`` each rank scored the share ``rank::world_size`` of the
    validation set (``DistributedSampler`` without shuffling), so interleaving the shares
    restores the order of the datalist. A single process gets its own rows back.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, rows)
    if dist.get_rank() != 0:
        return None
    out: dict[str, list] = {key: [] for key in rows}
    for key in rows:
        longest = max(len(share[key]) for share in shares)
        out[key] = [share[key][j] for j in range(longest) for share in shares if j < len(share[key])]
    return out


class PredictionSaver:
    """Collect ``image_id, patient_id, label, score`` over an evaluator run and write them as CSV.

    Under ``DistributedDataParallel`` every rank runs it (it gathers the ranks' rows) and
    rank 0 writes.

    Args:
        filename: the CSV to write (atomically).
        best_only: write only after a run that set a new best key metric, so that the file
            always holds the predictions of the checkpoint saved for that metric.
        score_key: output key of the predicted probability.
        label_key: output key of the 0/1 truth (the column is left out when absent).
    """

    def __init__(self, filename: str, best_only: bool = False, score_key: str = "pred", label_key: str = "label") -> None:
        self.filename = filename
        self.best_only = best_only
        self.score_key = score_key
        self.label_key = label_key
        self.rows: dict[str, list] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = {"image_id": [], "patient_id": [], "label": [], "score": []}

    def collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        scores = _column(output, self.score_key)
        n = len(scores)
        for key in ("image_id", "patient_id"):
            values = _column(batch, key)
            self.rows[key].extend(values if values is not None else [""] * n)
        labels = _column(output, self.label_key)
        if labels is not None:
            self.rows["label"].extend(int(_scalar(v)) for v in labels)
        self.rows["score"].extend(_scalar(v) for v in scores)

    def write(self, engine: Engine) -> None:
        if self.best_only and engine.state.best_metric_epoch != engine.state.epoch:
            return  # every rank agrees: the key metric is gathered over all ranks

        rows = _gather_rows(self.rows)
        if rows is None:
            return  # not rank 0
        if len(rows["label"]) != len(rows["score"]):
            rows.pop("label")
        write_csv(self.filename, pd.DataFrame(rows))


class RunRecorder:
    """Write the run record (``run.json``) when training completes.

    It holds the cell (from ``cell.json``), the settings given in ``record``, timing,
    training throughput, peak memory and the evaluator's best metric. It is written last
    and atomically: a cell is finished exactly when its run record exists.

    Args:
        filename: the run record to write.
        evaluator: the validation evaluator (for the best metric and its epoch).
        cell_file: ``cell.json`` of the cell, merged into the record when it exists.
        predictions_file: must exist when training completes (written by ``PredictionSaver``).
        record: further settings to record (batch size, epochs, ...).
        device: the training device (for its peak memory).
        world_size: processes training together (DistributedDataParallel); each runs the same
            number of equal batches, so the images trained on are this process's times it.
    """

    def __init__(self, filename: str, evaluator: Engine, cell_file: str | None = None,
                 predictions_file: str | None = None, record: dict | None = None,
                 device: torch.device | str = "cpu", world_size: int = 1) -> None:
        self.filename = filename
        self.device = device
        self.world_size = int(world_size)
        self.best_metrics: dict[str, float] = {}
        self.evaluator = evaluator
        self.cell_file = cell_file
        self.predictions_file = predictions_file
        self.record = dict(record or {})
        self.images = 0
        self.loop_seconds = 0.0
        self.epoch_rates: list[float | None] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.write)
        # runs after the evaluator's own best-metric bookkeeping, which it registers first
        self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)

    def _validated(self, evaluator: Engine) -> None:
        if evaluator.state.best_metric_epoch == evaluator.state.epoch:
            self.best_metrics = {k: float(v) for k, v in evaluator.state.metrics.items()
                                 if isinstance(v, (int, float))}

    def _started(self, engine: Engine) -> None:
        self.start = time.perf_counter()

    def _epoch_started(self, engine: Engine) -> None:
        self.epoch_start = self.last_iteration = time.perf_counter()
        self.epoch_images = self.images

    def _iteration_completed(self, engine: Engine) -> None:
        labels = _column(engine.state.batch, "label")
        self.images += (len(labels) if labels is not None else 1) * self.world_size
        self.last_iteration = time.perf_counter()

    def _epoch_completed(self, engine: Engine) -> None:
        # the training loop only: validation runs later in the same event
        seconds = self.last_iteration - self.epoch_start
        self.loop_seconds += seconds
        self.epoch_rates.append(round((self.images - self.epoch_images) / seconds, 2) if seconds > 0 else None)

    def write(self, engine: Engine) -> None:
        if self.predictions_file and not os.path.exists(self.predictions_file):
            raise RuntimeError(f"no validation predictions were written to {self.predictions_file}")
        device = torch.device(self.device)
        cell = {}
        if self.cell_file and os.path.exists(self.cell_file):
            cell = json.loads(Path(self.cell_file).read_text(encoding="utf-8"))
        out = {
            **cell,
            **self.record,
            "epochs": int(engine.state.epoch),
            "iterations": int(engine.state.iteration),
            "train_images": self.images,
            "train_seconds": round(time.perf_counter() - self.start, 3),
            "train_loop_seconds": round(self.loop_seconds, 3),
            "images_per_s": round(self.images / self.loop_seconds, 2) if self.loop_seconds > 0 else None,
            "epoch_images_per_s": self.epoch_rates,
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "best_val_auc": float(self.evaluator.state.best_metric),
            "best_epoch": int(self.evaluator.state.best_metric_epoch),
            "best_val_auc_se": self.best_metrics.get(f"{self.evaluator.state.key_metric_name}_se"),
            "best_val_metrics": self.best_metrics,
            "device": str(device),
            "world_size": self.world_size,
            "torch_threads": torch.get_num_threads(),
            "host": platform.node(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(device)
        write_json(self.filename, out)


class TerminalProgressBar:
    """Ignite's ProgressBar, but only on an interactive terminal: logs of batch runs stay clean."""

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        if not sys.stderr.isatty():
            return

        def loss(output):
            value = _column(output, "loss") if isinstance(output, list) else output.get("loss")
            value = value[0] if isinstance(value, list) else value
            return {"loss": _scalar(value)}

        ProgressBar(persist=self.persist).attach(engine, output_transform=loss)
