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
    batch_size: int = 32
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

    def __post_init__(self) -> None:
        self.amp = amp_mode(self.amp)

    def bundle_values(self) -> dict:
        """The template keys every cell shares (JSON values), under the template's names."""
        keys = ("epochs", "batch_size", "subsample", "balanced", "learning_rate", "weight_decay",
                "augment_prob", "val_interval", "loader_workers", "amp", "initial_weights",
                "channels_last", "cudnn_benchmark", "pin_memory")
        return {TEMPLATE_KEYS.get(k, k): getattr(self, k) for k in keys}


def grid_defaults() -> dict:
    """The default of every setting that has one, by name (the command line shows the same)."""
    return {f.name: f.default if f.default is not MISSING else f.default_factory()
            for f in fields(GridSettings) if f.default is not MISSING or f.default_factory is not MISSING}
