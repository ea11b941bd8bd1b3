"""Resume inside a cell: the whole training state after every epoch, loaded when a killed run starts again.

A killed cell would otherwise start again from epoch 0. :class:`ResumeCheckpoint` saves, at
the end of every training epoch (after validation and the key-metric checkpoint), everything
the rest of the run depends on, and loads it when a run of the same settings starts, so the
run goes on after the last saved epoch and ends with the same numbers as a run that was never
interrupted (same seed, device and thread count).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from monai.transforms import Randomizable, Transform
from torch.utils.data import DataLoader, Dataset, Sampler

from monai_cxr.fileio import atomic_write
from monai_cxr.studydir import resume_file, resume_fingerprint

__all__ = ["RandomStates", "ResumeCheckpoint"]

log = logging.getLogger(__name__)

_GENERATORS = (np.random.RandomState, np.random.Generator, torch.Generator)
_WALKED = (Transform, Randomizable, Dataset, DataLoader, Sampler)


def _generators(obj, found: list, seen: set, depth: int = 0) -> None:
    """Append the random generators reachable from ``obj`` through transforms, datasets, loaders and samplers."""
    if id(obj) in seen or depth > 12:
        return
    seen.add(id(obj))
    if isinstance(obj, _GENERATORS):
        found.append(obj)
    elif isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], _WALKED + _GENERATORS):  # a list of transforms, not a datalist
            for item in obj:
                _generators(item, found, seen, depth + 1)
    elif isinstance(obj, _WALKED):
        if isinstance(obj, Randomizable):
            _generators(obj.R, found, seen, depth + 1)  # the class's shared stream when the object has none
        for value in vars(obj).values():
            _generators(value, found, seen, depth + 1)


def _epoch_sampler(loader):
    """The loader's batch sampler where it keeps state (``SubsampleSampler(batch_size=...)``), else its sampler."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    return batch_sampler if hasattr(batch_sampler, "state_dict") else getattr(loader, "sampler", None)


def _mt19937(state: dict, key_type=list) -> dict:
    """A ``RandomState`` state (``get_state(legacy=False)``) with its key as a list (to save) or an array (to set)."""
    key = state["state"]["key"]
    key = key.tolist() if key_type is list else np.asarray(key, dtype=np.uint32)
    return {**state, "state": {"key": key, "pos": state["state"]["pos"]}}


def _get(generator) -> dict | torch.Tensor:
    if isinstance(generator, torch.Generator):
        return generator.get_state()
    if isinstance(generator, np.random.Generator):
        return generator.bit_generator.state
    return _mt19937(generator.get_state(legacy=False))


def _set(generator, state) -> None:
    if isinstance(generator, torch.Generator):
        generator.set_state(state)
    elif isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    else:
        generator.set_state(_mt19937(state, np.ndarray))


class RandomStates:
    """The random streams of this process: Python's, NumPy's, torch's (CPU, CUDA) and those reachable from ``roots``.

    ``roots`` are walked through MONAI transforms, datasets, data loaders and samplers for the
    generators they own (a random transform's ``R``, a loader's ``generator``), so random
    augmentation goes on where it stopped. Streams of data-loader worker processes are not
    here: they are seeded from torch's stream when the workers start.
    """

    def __init__(self, *roots) -> None:
        self.roots = roots

    def owned(self) -> list:
        """The generators found from ``roots``, in a fixed order."""
        found: list = []
        seen: set = set()
        for root in self.roots:
            _generators(root, found, seen)
        return found

    def state_dict(self) -> dict:
        return {
            "python": random.getstate(),
            "numpy": _mt19937(np.random.get_state(legacy=False)),  # noqa: NPY002 - the global stream is used
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "owned": [_get(g) for g in self.owned()],
        }

    def load_state_dict(self, state: dict) -> None:
        owned = self.owned()
        if len(owned) != len(state["owned"]):
            raise RuntimeError(
                f"the resume checkpoint holds {len(state['owned'])} random streams of the data path, "
                f"this run has {len(owned)}"
            )
        random.setstate(state["python"])
        np.random.set_state(_mt19937(state["numpy"], np.ndarray))  # noqa: NPY002
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        for generator, saved in zip(owned, state["owned"]):
            _set(generator, saved)


class _BestMetric:
    """The evaluator's best key metric and its epoch (what selects the checkpoint)."""

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state: dict) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]


class _KeyMetricSaver:
    """What MONAI's ``CheckpointSaver`` has saved for the key metric (so that ``model.pt`` stays the best)."""

    def __init__(self, saver) -> None:
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise TypeError(f"expected a CheckpointSaver with save_key_metric, got {type(saver).__name__}")
        self.saver = saver

    def state_dict(self) -> dict:
        return self.saver._key_metric_checkpoint.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.saver.load_state_dict(state)

    def files(self) -> list[Path]:
        """The files it has saved (MONAI's saver writes a fixed ``key_metric_filename`` when one is set)."""
        checkpoint = self.saver._key_metric_checkpoint
        handler = checkpoint.save_handler
        return [Path(handler.dirname) / (getattr(handler, "filename", None) or name) for _, name in checkpoint._saved]


def _gather(obj, world_size: int) -> list:
    """``obj`` of every rank, in rank order (this process's alone without ``torch.distributed``)."""
    if world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class ResumeCheckpoint:
    """Save the training state after every epoch; a run of the same settings that finds it goes on from there.

    After each training epoch (list it last among ``train#handlers``, so it runs after the
    learning-rate step, validation, the key-metric checkpoint and the run record) rank 0
    writes ``models/resume-<fingerprint>.pt`` atomically: the trainer's epoch and iteration,
    ``objects`` (network, optimiser, learning-rate schedule, the key-metric ``CheckpointSaver``
    and the ``RunRecorder``: anything with ``state_dict``), the evaluator's best metric and
    epoch, the sampler and ``prepare_batch`` (where they have ``state_dict``), the AMP grad
    scaler and every rank's random streams (:class:`RandomStates`). The file is removed once the run
    has finished (``run.json`` is written): a finished cell is never resumed.

    When the trainer starts and the file exists, it is loaded and training goes on at the next
    epoch ("resuming from epoch N" in the log). The name holds
    :func:`~monai_cxr.studydir.resume_fingerprint` of the cell's training files and the world
    size; the file also holds that fingerprint and ``settings`` (the values the run resolved,
    command-line overrides included). A checkpoint of other files or settings, or whose
    ``model.pt`` is gone, is never loaded: it is discarded with a log line and the run starts
    from epoch 0.

    Args:
        bundle_root: the cell folder.
        objects: name -> object with ``state_dict``/``load_state_dict``; a ``CheckpointSaver``
            is taken for its key-metric bookkeeping; None entries (handlers off on this rank) are left out.
        evaluator: the validation evaluator.
        scorer: the evaluator that scores after training; the file goes once it (and the run record) completed.
        settings: JSON values that must be equal for a run to go on from the file.
        rank: this process's rank (only rank 0 writes).
        world_size: processes training together.
    """

    def __init__(
        self,
        bundle_root: str,
        objects: dict,
        evaluator: Engine,
        scorer: Engine | None = None,
        settings: dict | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.bundle_root = Path(bundle_root)
        self.path = resume_file(bundle_root, world_size)
        self.fingerprint = resume_fingerprint(bundle_root, world_size)
        self.settings = dict(settings or {})
        self.rank, self.world_size = int(rank), int(world_size)
        self.evaluator, self.scorer = evaluator, scorer
        self.objects = {
            name: _KeyMetricSaver(obj) if hasattr(obj, "_key_metric_checkpoint") else obj
            for name, obj in objects.items()
            if obj is not None
        }
        self.off = {name for name, obj in objects.items() if obj is None}  # rank 0's only: loaded there
        for name, obj in self.objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"resume object {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict")
        self.objects["best_metric"] = _BestMetric(evaluator)

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        self.random = RandomStates(
            getattr(engine, "data_loader", None),
            getattr(engine, "prepare_batch", None),
            getattr(engine, "inferer", None),
        )
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        # after the run record, which registers the same event first
        (self.scorer or engine).add_event_handler(Events.COMPLETED, self.finished)

    def _stateful(self) -> dict:
        """The objects saved, by name: those given plus the trainer, its grad scaler and, where they have a
        ``state_dict``, its sampler and ``prepare_batch`` (device-side augmentation with its own generator)."""
        out = {"trainer": self.trainer, **self.objects}
        parts = {
            "sampler": _epoch_sampler(getattr(self.trainer, "data_loader", None)),
            "prepare_batch": getattr(self.trainer, "prepare_batch", None),
        }
        for name, part in parts.items():
            if hasattr(part, "state_dict") and hasattr(part, "load_state_dict"):
                out[name] = part
        if getattr(self.trainer, "scaler", None) is not None:
            out["scaler"] = self.trainer.scaler
        return out

    def _discard(self, path: Path, why: str) -> None:
        if self.rank == 0:
            start = "; training starts from epoch 0" if path == self.path else ""
            log.info(f"discarding models/{path.name}: {why}{start}")
            path.unlink(missing_ok=True)

    def _why_not(self, checkpoint: dict) -> str | None:
        """Why ``checkpoint`` must not be resumed, or None."""
        if not isinstance(checkpoint, dict) or checkpoint.get("fingerprint") != self.fingerprint:
            return "it was written for other configs, data or number of processes"
        if checkpoint.get("settings") != self.settings:
            changed = sorted(
                k
                for k in {**checkpoint.get("settings", {}), **self.settings}
                if checkpoint.get("settings", {}).get(k) != self.settings.get(k)
            )
            return f"it was written with other settings ({', '.join(changed)})"
        missing = [name for name in checkpoint.get("files", []) if not (self.bundle_root / name).is_file()]
        if missing:
            return f"the checkpoint it selected, {missing[0]}, is missing"
        streams = checkpoint.get("random", [])
        if (
            set(checkpoint.get("objects", {})) - self.off != set(self._stateful())
            or len(streams) != self.world_size
            or len(streams[self.rank]["owned"]) != len(self.random.owned())
        ):
            return "it holds other parts of the training state than this run has"
        return None

    def load(self, engine: Engine) -> None:
        for other in sorted(self.path.parent.glob("resume-*.pt")):
            if other != self.path:
                self._discard(other, "it was written for other configs, data or number of processes")
        if not self.path.is_file():
            return
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unreadable file is discarded, never trusted
            self._discard(self.path, f"it cannot be read ({type(exc).__name__})")
            return
        why = self._why_not(checkpoint)
        if why is not None:
            self._discard(self.path, why)
            return
        Checkpoint.load_objects(self._stateful(), checkpoint["objects"])
        self.random.load_state_dict(checkpoint["random"][self.rank])
        if self.rank == 0:
            threads = checkpoint.get("torch_threads")
            log.info(f"resuming from epoch {engine.state.epoch} of {engine.state.max_epochs} (models/{self.path.name})")
            if threads != torch.get_num_threads():
                log.info(
                    f"note: the epochs so far ran with {threads} threads, this run has {torch.get_num_threads()}: "
                    f"its numbers may differ slightly from an uninterrupted run"
                )

    def save(self, engine: Engine) -> None:
        random_states = _gather(self.random.state_dict(), self.world_size)  # every rank takes part
        if self.rank != 0:
            return
        objects = {}
        for name, obj in self._stateful().items():
            if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
                obj = obj.module  # the bare network, as Ignite's Checkpoint saves it
            objects[name] = obj.state_dict()
        files = [
            os.path.relpath(path, self.bundle_root)
            for saver in self.objects.values()
            if isinstance(saver, _KeyMetricSaver)
            for path in saver.files()
        ]
        checkpoint = {
            "fingerprint": self.fingerprint,
            "settings": self.settings,
            "objects": objects,
            "files": files,
            "random": random_states,
            "torch_threads": torch.get_num_threads(),
        }
        atomic_write(self.path, lambda tmp: torch.save(checkpoint, tmp))

    def finished(self, engine: Engine) -> None:
        if self.rank == 0:
            self.path.unlink(missing_ok=True)
