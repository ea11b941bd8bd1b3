"""The architectures a grid can name, as bundle ``network_def`` entries (torch-free: configs are data)."""

from __future__ import annotations

import copy

__all__ = ["ARCHS", "MIN_RESOLUTION", "network_def"]

# One input channel (grey radiograph), one output (the logit of the finding).
ARCHS: dict[str, dict] = {
    # The standard ImageNet ResNet34: 7x7 stride-2 stem and max-pool (MONAI's default stem is
    # stride 1, which costs about 4x the compute). About 21.3 M parameters.
    "resnet34": {
        "_target_": "monai.networks.nets.resnet34",
        "spatial_dims": 2,
        "n_input_channels": 1,
        "num_classes": 1,
        "conv1_t_size": 7,
        "conv1_t_stride": 2,
    },
    # About 7.0 M parameters.
    "densenet121": {
        "_target_": "monai.networks.nets.DenseNet121",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
    },
}

# Smallest input each network accepts (DenseNet121's last transition pools a 2x2 map at 32 px).
MIN_RESOLUTION = {"resnet34": 16, "densenet121": 32}


def network_def(arch: str) -> dict:
    """A fresh copy of the ``network_def`` config of ``arch``."""
    return copy.deepcopy(ARCHS[arch])
