"""Small Ignite handlers used by the template bundle.

Each has ``attach(engine)``, as MONAI's handlers do, so the bundle lists them among
``train#handlers`` / ``validate#handlers`` / ``score#handlers``.

Over 400 lines: one small class per Ignite handler the template names; they share the
batch/output helpers at the top.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from monai_cxr.cell.readme import with_result
from monai_cxr.fileio import write_csv, write_json, write_text

__all__ = ["LearningRateLogger", "PredictionSaver", "RunRecorder", "TrainingLog", "peak_memory_mb"]

log = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, resident set size on a CPU."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class LearningRateLogger:
    """Put the learning rate of the epoch into ``engine.state.metrics`` (``"lr"``).

    The training log and TensorBoardStatsHandler then log it with the other epoch values. List
    it before ``LrScheduleHandler`` so it records the rate the epoch was trained with.
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


def _channels(items, key) -> torch.Tensor | None:
    """``key`` of a batch or output as one tensor of shape (B, C): a batch tensor, or decollated items stacked."""
    if isinstance(items, dict):
        values = items.get(key)
    else:
        values = _column(items, key)
        values = None if values is None else torch.stack([torch.as_tensor(v) for v in values])
    if values is None:
        return None
    values = torch.as_tensor(values).detach()
    return values.reshape(values.shape[0], -1)


def findings_of(datalist_file: str | None) -> list[str] | None:
    """The findings of a multi-label cell (its datalist's ``label_names``); None for a binary cell."""
    if not datalist_file or not os.path.isfile(datalist_file):
        return None
    names = json.loads(Path(datalist_file).read_text(encoding="utf-8")).get("label_names")
    return [str(n) for n in names] if isinstance(names, list) else None


def _batch_size(batch) -> int:
    """Images in a batch (a dict of batch tensors or a list of items), without touching their values."""
    if isinstance(batch, dict):
        labels = batch.get("label", batch.get("image"))
        return len(labels) if labels is not None else 1
    return len(batch) if isinstance(batch, list) else 1


def _gather_rows(rows: dict[str, list]) -> dict[str, list] | None:
    """Rank 0: the rows of every rank, in dataset order; other ranks: None.

    Under ``torch.distributed`` each rank scored the share ``rank::world_size`` of the
    dataset (``DistributedSampler`` without shuffling), so interleaving the shares restores
    the order of the datalist. A single process gets its own rows back.
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
    """Collect ``image_id, patient_id, fold, label, score`` over an evaluator run and write them as CSV.

    Scores and labels are kept per batch on their device and read back once per run, not per
    sample. ``fold`` and ``label`` are left out when the data has none. Under
    ``DistributedDataParallel`` every rank runs it (it gathers the ranks' rows) and rank 0 writes.

    A multi-label cell (``datalist_file`` names its findings as ``label_names``) gets one row per
    image and finding, ``image_id, patient_id, fold, finding, label, score``, in datalist order and
    then finding order; a pair whose label is unknown (-1) has no row, so each finding's rows are
    what a binary cell of that finding would have scored.

    Args:
        filename: the CSV to write (atomically).
        best_only: write only after a run that set a new best key metric, so that the file
            always holds the predictions of the checkpoint saved for that metric.
        score_key: output key of the predicted probability.
        label_key: output key of the 0/1 truth.
        datalist_file: the cell's datalist (read with ``json``); a binary cell's names no findings.
    """

    def __init__(
        self,
        filename: str,
        best_only: bool = False,
        score_key: str = "pred",
        label_key: str = "label",
        datalist_file: str | None = None,
    ) -> None:
        self.filename = filename
        self.best_only = best_only
        self.score_key = score_key
        self.label_key = label_key
        self.findings = findings_of(datalist_file)
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.ids: dict[str, list] = {"image_id": [], "patient_id": [], "fold": []}
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        width = len(self.findings) if self.findings else 1
        scores = _channels(output, self.score_key)[:, :width]
        self.scores.append(scores.float())
        labels = _channels(output, self.label_key)
        if labels is not None:
            self.labels.append(labels[:, :width])
        for key, values in self.ids.items():
            column = _column(batch, key)
            values.extend(column if column is not None else [""] * len(scores))

    def rows(self) -> dict[str, list]:
        """This process's rows so far, one per image (one read-back from the device per column).

        ``label`` and ``score`` hold numbers, or for a multi-label cell lists of k numbers (see :meth:`by_finding`).
        """
        rows = {key: list(values) for key, values in self.ids.items()}
        rows["label"] = torch.cat(self.labels).cpu().round().long().tolist() if self.labels else []
        rows["score"] = torch.cat(self.scores).cpu().tolist() if self.scores else []
        if not self.findings:
            rows["label"] = [v[0] for v in rows["label"]]
            rows["score"] = [v[0] for v in rows["score"]]
        return rows

    def by_finding(self, rows: dict[str, list]) -> dict[str, list]:
        """Per-image rows of a multi-label cell as one row per known (image, finding) pair, with ``finding``."""
        labelled = len(rows["label"]) == len(rows["score"])
        pairs = [
            (i, j)
            for i in range(len(rows["score"]))
            for j in range(len(self.findings))
            if not labelled or rows["label"][i][j] >= 0
        ]
        out = {key: [rows[key][i] for i, _ in pairs] for key in self.ids}
        out["finding"] = [self.findings[j] for _, j in pairs]
        if labelled:
            out["label"] = [rows["label"][i][j] for i, j in pairs]
        out["score"] = [rows["score"][i][j] for i, j in pairs]
        return out

    def write(self, engine: Engine) -> None:
        if self.best_only and engine.state.best_metric_epoch != engine.state.epoch:
            return  # every rank agrees: the key metric is gathered over all ranks
        rows = _gather_rows(self.rows())
        if rows is None:
            return  # not rank 0
        if self.findings:
            rows = self.by_finding(rows)
        if len(rows.get("label", ())) != len(rows["score"]):
            rows.pop("label", None)  # no truth (inference on unlabelled images)
        if all(fold == "" for fold in rows["fold"]):
            rows.pop("fold")
        write_csv(self.filename, pd.DataFrame(rows))


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(max(seconds, 0.0))))


class TrainingLog:
    """Progress of training: a line every ``every`` iterations or ``seconds`` seconds, and each epoch's mean loss.

    The loss is summed on the device and read back only when a line is due and at the end of
    each epoch, never every step. A line gives the epoch, iteration, mean loss since the last
    line, images/s and the training time left (ETA; validation not counted). The epoch's mean
    loss goes to ``engine.state.metrics[name]``, so list this handler before
    ``TensorBoardStatsHandler`` (which writes the epoch's metrics). With ``evaluator``, each
    validation's key metric and its DeLong SE are logged too. On an interactive terminal
    Ignite's ProgressBar shows the figures instead of the lines: a log file never gets
    carriage returns.

    Args:
        evaluator: the validation evaluator.
        every: a line every this many iterations of an epoch (0: by time only).
        seconds: a line once this many seconds have passed since the last one (0: by count only).
        name: metric name of the epoch's mean loss.
        world_size: processes training together; images/s counts them all, the loss is this process's.
        progress_bar: show Ignite's ProgressBar instead of lines [default: when stderr is a terminal].
    """

    def __init__(
        self,
        evaluator: Engine | None = None,
        every: int = 0,
        seconds: float = 30.0,
        name: str = "train_loss",
        world_size: int = 1,
        progress_bar: bool | None = None,
    ) -> None:
        self.evaluator = evaluator
        self.every = int(every)
        self.seconds = float(seconds)
        self.name = name
        self.world_size = int(world_size)
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else bool(progress_bar)
        self.max_epochs = 0
        self.postfix: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.evaluator is not None:  # after the evaluator's own metric and best-metric handlers
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)
        if self.progress_bar:
            ProgressBar(persist=False).attach(engine, output_transform=lambda _: self.postfix)

    def _epoch_started(self, engine: Engine) -> None:
        self.max_epochs = engine.state.max_epochs
        self.epoch_start = self.line_time = time.perf_counter()
        self.window: torch.Tensor | None = None
        self.window_n = self.epoch_n = self.images = self.line_images = 0
        self.epoch_sum = 0.0

    def _read_window(self) -> float | None:
        """Mean loss since the last read (one read-back from the device), added to the epoch's sum."""
        if self.window is None:
            return None
        total = float(self.window)
        self.epoch_sum += total
        mean = total / self.window_n
        self.window, self.window_n = None, 0
        return mean

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        loss = (output[0] if isinstance(output, list) else output)["loss"].detach().float()
        self.window = loss if self.window is None else self.window + loss
        self.window_n += 1
        self.epoch_n += 1
        self.images += _batch_size(engine.state.batch) * self.world_size
        now = time.perf_counter()
        if (self.every and self.epoch_n % self.every == 0) or (self.seconds and now - self.line_time >= self.seconds):
            self._line(engine, now)

    def _line(self, engine: Engine, now: float) -> None:
        loss = self._read_window()
        rate = (self.images - self.line_images) / max(now - self.line_time, 1e-9)
        length = engine.state.epoch_length or self.epoch_n
        left = (self.max_epochs - engine.state.epoch) * length + length - self.epoch_n
        eta = left * (now - self.epoch_start) / self.epoch_n
        self.line_time, self.line_images = now, self.images
        self.postfix = {"loss": loss, "img/s": round(rate, 1)}
        if not self.progress_bar:
            log.info(
                f"epoch {engine.state.epoch}/{self.max_epochs}  iteration {self.epoch_n}/{length}  "
                f"loss {loss:.4f}  {rate:.1f} img/s  ETA {_clock(eta)}"
            )

    def _epoch_completed(self, engine: Engine) -> None:
        seconds = time.perf_counter() - self.epoch_start
        self._read_window()
        mean = self.epoch_sum / max(self.epoch_n, 1)
        engine.state.metrics[self.name] = mean
        lr = engine.state.metrics.get("lr")
        log.info(
            f"epoch {engine.state.epoch}/{self.max_epochs}: {self.name} {mean:.4f} "
            f"(mean of {self.epoch_n} iterations)"
            + (f", lr {lr:.3g}" if lr is not None else "")
            + f", {self.images / max(seconds, 1e-9):.1f} img/s, {seconds:.1f} s"
        )

    def _validated(self, evaluator: Engine) -> None:
        name = evaluator.state.key_metric_name
        value, se = evaluator.state.metrics.get(name), evaluator.state.metrics.get(f"{name}_se")
        if value is None:
            return
        log.info(
            f"epoch {evaluator.state.epoch}/{self.max_epochs}: {name} {value:.4f}"
            + (f" ± {se:.4f} (DeLong SE)" if se is not None else "")
            + f", best {evaluator.state.best_metric:.4f} at epoch {evaluator.state.best_metric_epoch}"
        )


class RunRecorder:
    """Write the run record (``run.json``) when the run is over: after training, or after ``scorer``.

    It holds the cell (from ``cell.json``), the settings given in ``record``, timing,
    training throughput, peak memory, the evaluator's best metric and a copy of the cell's
    ``inputs.json``. It is written last and atomically: a cell is finished exactly when its
    run record exists. With ``readme_file``, the result section of the cell's README gets the
    AUC first. A resumed run loads what the record had counted (``load_state_dict``): times and
    images then count the epochs kept from before, and ``resumed_from_epoch`` says after which
    epoch it went on (null for a run from the start).

    Args:
        filename: the run record to write.
        evaluator: the validation evaluator (for the best metric and its epoch).
        scorer: the evaluator that scores the selected checkpoint after training (its
            ``PredictionSaver`` writes ``predictions.csv``); the record is written once it completes.
        cell_file: ``cell.json`` of the cell, merged into the record when it exists.
        predictions_file: must exist when the record is written.
        inputs_file: ``inputs.json`` of the cell, copied into the record (``null`` when absent).
        readme_file: the cell's ``docs/README.md``.
        init_file: the record of the network's starting weights that
            ``monai_cxr.cell.pretrained.pretrained_network`` wrote; copied into the record as ``init``.
        record: further settings to record (batch size, epochs, ...).
        device: the training device (for its peak memory).
        world_size: processes training together (DistributedDataParallel); each runs the same
            number of equal batches, so the images trained on are this process's times it.
    """

    def __init__(
        self,
        filename: str,
        evaluator: Engine,
        scorer: Engine | None = None,
        cell_file: str | None = None,
        predictions_file: str | None = None,
        inputs_file: str | None = None,
        readme_file: str | None = None,
        record: dict | None = None,
        device: torch.device | str = "cpu",
        world_size: int = 1,
        init_file: str | None = None,
    ) -> None:
        self.filename = filename
        self.device = device
        self.world_size = int(world_size)
        self.best_metrics: dict[str, float] = {}
        self.evaluator = evaluator
        self.scorer = scorer
        self.cell_file = cell_file
        self.predictions_file = predictions_file
        self.inputs_file = inputs_file
        self.readme_file = readme_file
        self.init_file = init_file
        self.record = dict(record or {})
        self.images = 0
        self.loop_seconds = 0.0
        self.epoch_rates: list[float | None] = []
        self.trained: dict = {}
        self.epoch = 0
        self.earlier_seconds = 0.0  # training time of the runs this one resumed
        self.resumed_from_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        # runs after the evaluator's own best-metric bookkeeping, which it registers first
        self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._validated)
        if self.scorer is not None:  # after the scorer's PredictionSaver (EPOCH_COMPLETED)
            self.scorer.add_event_handler(Events.COMPLETED, self.write)

    def _validated(self, evaluator: Engine) -> None:
        if evaluator.state.best_metric_epoch == evaluator.state.epoch:
            self.best_metrics = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}

    def _started(self, engine: Engine) -> None:
        self.start = time.perf_counter()

    def state_dict(self) -> dict:
        """What the record has counted so far (for a resume checkpoint, saved after an epoch)."""
        return {
            "epoch": self.epoch,
            "images": self.images,
            "loop_seconds": self.loop_seconds,
            "epoch_rates": list(self.epoch_rates),
            "best_metrics": dict(self.best_metrics),
            "seconds": self.earlier_seconds + time.perf_counter() - self.start,
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on counting from a resume checkpoint's ``state_dict``."""
        self.epoch = self.resumed_from_epoch = int(state["epoch"])
        self.images, self.loop_seconds = int(state["images"]), float(state["loop_seconds"])
        self.epoch_rates, self.best_metrics = list(state["epoch_rates"]), dict(state["best_metrics"])
        self.earlier_seconds = float(state["seconds"])

    def _epoch_started(self, engine: Engine) -> None:
        self.epoch_start = self.last_iteration = time.perf_counter()
        self.epoch_images = self.images

    def _iteration_completed(self, engine: Engine) -> None:
        self.images += _batch_size(engine.state.batch) * self.world_size
        self.last_iteration = time.perf_counter()

    def _epoch_completed(self, engine: Engine) -> None:
        # the training loop only: validation runs later in the same event
        seconds = self.last_iteration - self.epoch_start
        self.loop_seconds += seconds
        self.epoch_rates.append(round((self.images - self.epoch_images) / seconds, 2) if seconds > 0 else None)
        self.epoch = int(engine.state.epoch)

    def _completed(self, engine: Engine) -> None:
        self.end = time.perf_counter()
        self.trained = {"epochs": int(engine.state.epoch), "iterations": int(engine.state.iteration)}
        if self.scorer is None:
            self.write(engine)

    def _readme(self, out: dict) -> None:
        if not (self.readme_file and os.path.isfile(self.readme_file)):
            return
        se = out["best_val_auc_se"]
        auc = f"Validation AUC **{out['best_val_auc']:.4f}**" + (f" ± {se:.4f} (DeLong SE)" if se is not None else "")
        body = (
            f"{auc}, best of {out['epochs']} epochs at epoch {out['best_epoch']}: that checkpoint is "
            f"`models/model.pt`, and its scores of the validation and test images are in `predictions.csv`. "
            f"Trained on {out['device']} in {out['train_seconds']:.0f} s "
            f"({out['images_per_s'] or 0:.0f} images/s). `run.json` holds the whole record."
        )
        text = Path(self.readme_file).read_text(encoding="utf-8")
        write_text(self.readme_file, with_result(text, body))

    def write(self, engine: Engine) -> None:
        if self.predictions_file and not os.path.exists(self.predictions_file):
            raise RuntimeError(f"no predictions were written to {self.predictions_file}")
        device = torch.device(self.device)
        cell, inputs = {}, None
        if self.cell_file and os.path.exists(self.cell_file):
            cell = json.loads(Path(self.cell_file).read_text(encoding="utf-8"))
        if self.inputs_file and os.path.exists(self.inputs_file):
            inputs = json.loads(Path(self.inputs_file).read_text(encoding="utf-8"))
        if self.init_file:  # what the network actually started from; absent: it was not built by pretrained_network
            init = Path(self.init_file)
            self.record["init"] = json.loads(init.read_text(encoding="utf-8")) if init.is_file() else None
        now = time.perf_counter()
        out = {
            **cell,
            **self.record,
            **self.trained,
            "train_images": self.images,
            "train_seconds": round(self.earlier_seconds + self.end - self.start, 3),
            "train_loop_seconds": round(self.loop_seconds, 3),
            "score_seconds": round(now - self.end, 3),
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
            "inputs": inputs,
            "resumed_from_epoch": self.resumed_from_epoch,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if device.type == "cuda":
            out["device_name"] = torch.cuda.get_device_name(device)
        self._readme(out)
        write_json(self.filename, out)
