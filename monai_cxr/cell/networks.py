"""Initial weights as cells generated before ``--pretrained`` load them (their train.json names ``load_weights``).

New cells start through :func:`monai_cxr.cell.pretrained.pretrained_network`, which also records what loaded.
"""

from __future__ import annotations

import os

import torch

__all__ = ["load_weights"]


def load_weights(network, path: str | None):
    """Load initial weights from a local state-dict file (``{"model": ...}`` or bare); no download."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"initial weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        network.load_state_dict(state)
    return network
