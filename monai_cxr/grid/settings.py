"""The settings of a grid: what ``generate`` was asked for, as recorded in ``study.json["grid"]``.

Torch-free, so the command line, the grid and the bundle's speed options share one vocabulary.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields

from monai_cxr.errors import CxrError

__all__ = ["AMP_MODES", "TASKS", "GridSettings", "amp_mode", "grid_defaults", "pretrained_map", "tasks"]

AMP_MODES = ("off", "fp16", "bf16")
# binary: one network per (label, arch, resolution, seed); multilabel: one per (arch, resolution, seed) for all labels
TASKS = ("binary", "multilabel")


def amp_mode(value) -> str:
    """``"off"``, ``"fp16"`` or ``"bf16"``; ``True``/``False`` (the old ``--amp`` flag) mean fp16/off."""
    if isinstance(value, bool) or value is None:
        return "fp16" if value else "off"
    text = str(value).strip().lower()
    if text not in AMP_MODES:
        raise CxrError(f"mixed precision {value!r} is not one of {', '.join(AMP_MODES)}")
    return text


# Settings generate works out rather than takes (no option sets them).
DERIVED = ("batch_sizes",)


def tasks(value) -> list[str]:
    """The grid's tasks: ``binary``, ``multilabel`` or both (a list or ``"binary,multilabel"``), in that order."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    out = [str(v).strip().lower() for v in items if str(v).strip()]
    bad = [v for v in out if v not in TASKS]
    if bad or not out:
        raise CxrError(f"task {(bad or [value])[0]!r} is not one of {', '.join(TASKS)}")
    return [t for t in TASKS if t in out]


def pretrained_map(value, archs) -> dict[str, str]:
    """``{arch: path}`` from a mapping, ``"ARCH=PATH,ARCH=PATH"``, or one bare path (only for a one-architecture grid,
    as the old ``--initial-weights`` gave it)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    text = str(value)
    if "=" not in text.split(",")[0]:
        if len(archs) != 1:
            raise CxrError(
                f"pretrained weights {text!r} name no architecture but the grid has {len(archs)}; "
                f"give --pretrained ARCH=PATH for each"
            )
        return {str(archs[0]): text}
    out = {}
    for item in re.split(r",(?=\s*[A-Za-z0-9][A-Za-z0-9._-]*=)", text):  # a path may hold a comma
        arch, _, path = item.partition("=")
        arch, path = arch.strip(), path.strip()
        if not arch or not path:
            raise CxrError(f"pretrained weights {item!r} is not ARCH=PATH (e.g. resnet34=resnet34-b627a593.pth)")
        if arch in out:
            raise CxrError(f"pretrained weights for {arch!r} are given twice")
        out[arch] = path
    return out


# The grid's real-valued settings: (lowest, whether the lowest itself is refused, highest). The command line checks
# the ranges too, but not NaN (every comparison with NaN is false) and not infinity; study presets and study.json
# skip the command line altogether.
FLOAT_RANGES = {
    "learning_rate": (0.0, True, None),
    "weight_decay": (0.0, False, None),
    "augment_prob": (0.0, False, 1.0),
}


def check_float(name: str, value) -> None:
    """Refuse, naming ``--option`` and value, a real setting that is not a finite number in its range."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CxrError(f"{option} {value!r} is not a number")
    if not math.isfinite(value):
        raise CxrError(f"{option} {value} is not a finite number")
    low, open_low, high = FLOAT_RANGES[name]
    if value < low or (open_low and value == low) or (high is not None and value > high):
        span = f"between {low:g} and {high:g}" if high is not None else f"{'above' if open_low else 'at least'} {low:g}"
        raise CxrError(f"{option} {value:g} is out of range; it must be {span}")


# Setting names that differ from the template's config keys (the template keeps its own names).
TEMPLATE_KEYS = {"loader_workers": "num_workers"}


@dataclass
class GridSettings:
    """What ``generate`` was asked for; recorded as ``study.json["grid"]``.

    Field names are the command line's option names (``learning_rate`` is ``--learning-rate``);
    :meth:`bundle_values` maps them to the template's keys.
    """

    labels: list[str]
    resolutions: list[int]
    archs: list[str] = field(default_factory=lambda: ["resnet34"])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 3
    batch_size: int | str = 32  # or "auto": per (arch, resolution), from a memory budget (batch_sizes)
    subsample: int = 2048
    balanced: bool = True
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    augment_prob: float = 0.0
    val_interval: int = 1
    loader_workers: int = 0
    amp: str = "off"
    pretrained: dict[str, str] = field(default_factory=dict)
    arch_file: str | None = None
    task: list[str] = field(default_factory=lambda: ["binary"])
    channels_last: bool = False
    cudnn_benchmark: bool = False
    pin_memory: bool = False
    # --batch-size auto: the budget a training step may use, and/or a `probe --out` table made on the training
    # device; generate resolves them into batch_sizes ("arch@R" -> batch), which the cells then use
    memory_budget: str | None = None
    probe_table: str | None = None
    batch_sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.amp = amp_mode(self.amp)
        self.task = tasks(self.task)
        self.pretrained = pretrained_map(self.pretrained, self.archs)

    def check(self) -> None:
        """Refuse, in one line, training settings no cell could use (before anything is written)."""
        for name in FLOAT_RANGES:
            check_float(name, getattr(self, name))
        if self.batch_size == "auto":
            if not (self.memory_budget or self.probe_table):
                raise CxrError(
                    "--batch-size auto needs --memory-budget (e.g. 16GiB) or --probe-table "
                    "(a `monai-cxr probe --out` table made on the training device)"
                )
        elif not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool):
            raise CxrError(f"batch size {self.batch_size!r} is not a whole number or auto")
        elif self.memory_budget or self.probe_table:
            raise CxrError("--memory-budget and --probe-table go with --batch-size auto")
        for (arch, resolution), batch in self.batches().items():
            if batch < 2:
                raise CxrError(
                    f"batch size {batch} ({arch}, {resolution} px) is too small; batch normalisation needs at least 2"
                )
            if 0 < self.subsample < batch:
                raise CxrError(
                    f"subsample {self.subsample} is smaller than the batch size {batch} ({arch}, {resolution} px)"
                )

    def batch_for(self, arch: str, resolution: int) -> int:
        """The training batch of one cell: the grid's, or with ``auto`` the one its memory budget allows."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        key = f"{arch}@{int(resolution)}"
        if key not in self.batch_sizes:
            raise CxrError(f"--batch-size auto has no batch for {arch} at {resolution} px yet (resolved by generate)")
        return int(self.batch_sizes[key])

    def batches(self) -> dict[tuple[str, int], int]:
        """``{(arch, resolution): batch}`` of every cell, where known (auto before generate resolves it: none)."""
        if self.batch_size == "auto" and not self.batch_sizes:
            return {}
        return {(a, int(r)): self.batch_for(a, r) for a in self.archs for r in self.resolutions}

    def bundle_values(self) -> dict:
        """The template keys every cell shares (JSON values), under the template's names."""
        keys = (
            "epochs",
            "subsample",
            "balanced",
            "learning_rate",
            "weight_decay",
            "augment_prob",
            "val_interval",
            "loader_workers",
            "amp",
            "channels_last",
            "cudnn_benchmark",
            "pin_memory",
        )
        return {TEMPLATE_KEYS.get(k, k): getattr(self, k) for k in keys}


def grid_defaults() -> dict:
    """The default of every setting that has one, by name (the command line shows the same)."""
    return {
        f.name: f.default if f.default is not MISSING else f.default_factory()
        for f in fields(GridSettings)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
