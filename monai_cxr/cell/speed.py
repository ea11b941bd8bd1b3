"""GPU speed options of a cell: what was asked for, and what the device can honour.

A study asks for mixed precision, channels-last memory, cuDNN autotuning, pinned memory
and loader workers once (``generate``); each cell's bundle resolves them against the device
it lands on. On a CPU the GPU-only ones are off (not an error), and ``run.json`` records
both the request and the effect, so a study run partly on CPUs says so.
"""

from __future__ import annotations

import torch

from monai_cxr.grid.settings import amp_mode

__all__ = ["SpeedOptions"]


class SpeedOptions:
    """The speed options of one run, resolved against ``device``.

    Args:
        device: the training device.
        amp: ``"off"``, ``"fp16"`` or ``"bf16"`` (bf16 falls back to fp16 on a GPU without it).
        channels_last: keep the network's weights, hence its convolutions, in NHWC.
        cudnn_benchmark: let cuDNN time its algorithms per input shape (fixed shapes here).
        pin_memory: page-locked loader batches, copied to the GPU without blocking.
        num_workers: DataLoader worker processes (honoured on any device).
    """

    def __init__(
        self,
        device,
        amp="off",
        channels_last: bool = False,
        cudnn_benchmark: bool = False,
        pin_memory: bool = False,
        num_workers: int = 0,
    ) -> None:
        device = torch.device(device)
        cuda = device.type == "cuda" and torch.cuda.is_available()
        self.requested = {
            "amp": amp_mode(amp),
            "channels_last": bool(channels_last),
            "cudnn_benchmark": bool(cudnn_benchmark),
            "pin_memory": bool(pin_memory),
            "num_workers": int(num_workers),
        }
        mode = self.requested["amp"] if cuda else "off"
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            mode = "fp16"
        self.effective = {
            "amp": mode,
            "channels_last": cuda and bool(channels_last),
            "cudnn_benchmark": cuda and bool(cudnn_benchmark),
            "pin_memory": cuda and bool(pin_memory),
            "num_workers": int(num_workers),
        }

    @property
    def amp(self) -> bool:
        """Whether the MONAI engines autocast (``amp`` argument)."""
        return self.effective["amp"] != "off"

    @property
    def amp_kwargs(self) -> dict:
        """``torch.autocast("cuda", **amp_kwargs)`` of the MONAI engines."""
        return {"dtype": torch.bfloat16 if self.effective["amp"] == "bf16" else torch.float16} if self.amp else {}

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.effective["channels_last"] else torch.contiguous_format

    @property
    def pin_memory(self) -> bool:
        return self.effective["pin_memory"]

    def apply(self) -> None:
        """Set process-wide switches; call after ``set_determinism``, which turns autotuning off."""
        if self.effective["cudnn_benchmark"]:
            torch.backends.cudnn.benchmark = True

    def record(self) -> dict:
        """For ``run.json``: ``{"requested": {...}, "effective": {...}}``."""
        return {"requested": dict(self.requested), "effective": dict(self.effective)}
