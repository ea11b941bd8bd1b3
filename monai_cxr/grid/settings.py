"""The settings of a grid: what ``generate`` was asked for, as recorded in ``study.json["grid"]``.

Torch-free, so the command line, the grid and the bundle's speed options share one vocabulary.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from monai_cxr.errors import CxrError

__all__ = ["AMP_MODES", "GridSettings", "amp_mode", "grid_defaults"]

AMP_MODES = ("off", "fp16", "bf16")


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
    initial_weights: str | None = None
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

    def check(self) -> None:
        """Refuse, in one line, training settings no cell could use (before anything is written)."""
        if self.batch_size == "auto":
            if not (self.memory_budget or self.probe_table):
                raise CxrError("--batch-size auto needs --memory-budget (e.g. 16GiB) or --probe-table "
                               "(a `monai-cxr probe --out` table made on the training device)")
        elif not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool):
            raise CxrError(f"batch size {self.batch_size!r} is not a whole number or auto")
        elif self.memory_budget or self.probe_table:
            raise CxrError("--memory-budget and --probe-table go with --batch-size auto")
        for (arch, resolution), batch in self.batches().items():
            if batch < 2:
                raise CxrError(f"batch size {batch} ({arch}, {resolution} px) is too small; batch normalisation "
                               f"needs at least 2")
            if 0 < self.subsample < batch:
                raise CxrError(f"subsample {self.subsample} is smaller than the batch size {batch} "
                               f"({arch}, {resolution} px)")

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
        keys = ("epochs", "subsample", "balanced", "learning_rate", "weight_decay",
                "augment_prob", "val_interval", "loader_workers", "amp", "initial_weights",
                "channels_last", "cudnn_benchmark", "pin_memory")
        return {TEMPLATE_KEYS.get(k, k): getattr(self, k) for k in keys}


def grid_defaults() -> dict:
    """The default of every setting that has one, by name (the command line shows the same)."""
    return {f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(GridSettings) if f.default is not MISSING or f.default_factory is not MISSING}
