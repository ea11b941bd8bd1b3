"""The training loss of a cell: binary cross-entropy over its outputs, unknown targets left out."""

from __future__ import annotations

import torch

__all__ = ["MaskedBCEWithLogitsLoss"]


class MaskedBCEWithLogitsLoss(torch.nn.Module):
    """``BCEWithLogitsLoss`` averaged over the known targets only: a target below 0 (-1, unknown) counts nothing.

    A binary cell (one output, targets 0/1) gets exactly ``BCEWithLogitsLoss()``; a multi-label cell (k outputs)
    the mean over every (image, label) whose label is known, so an image unknown for one finding still trains
    the others. A batch without a known target gives 0 (with a gradient of 0).
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(input.dtype).reshape(input.shape)
        known = target >= 0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(input, target.clamp(min=0), reduction="none")
        return (loss * known).sum() / known.sum().clamp(min=1)
