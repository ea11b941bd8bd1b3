"""The architectures a grid can name, as bundle ``network_def`` entries (configs are data).

Two are built in (:data:`ARCHS`); ``--arch-file nets.json`` adds a user's own, checked as data by
``monai_cxr.cell.pretrained.load_arch_file``. The smallest input a network accepts is measured on the
network itself (``monai_cxr.cell.pretrained.min_resolution``), never read from a table. Torch is imported
only by the functions that build a network.
"""

from __future__ import annotations

import copy
import functools
import json

from monai_cxr.errors import CxrError

__all__ = ["ARCHS", "OUTPUT_KEYS", "accepts", "arch_defs", "check_input_size", "network_def", "smallest_input"]

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

# The argument that sets a network's number of outputs, as MONAI's classifiers name it.
OUTPUT_KEYS = ("num_classes", "out_channels", "classes", "num_outputs", "out_features")


def arch_defs(archs, arch_file: str | None = None) -> dict[str, dict]:
    """The ``network_def`` of each name in ``archs``: a built-in one, or one from ``arch_file``; one-line refusals."""
    user: dict[str, dict] = {}
    if arch_file:
        from monai_cxr.cell.pretrained import load_arch_file

        user = load_arch_file(arch_file)
        clash = [name for name in user if name.lower() in ARCHS]
        if clash:
            raise CxrError(
                f"architecture file {arch_file}: name {clash[0]!r} is built in; give your network another name"
            )
    out = {}
    for arch in archs:
        if arch in ARCHS:
            out[arch] = copy.deepcopy(ARCHS[arch])
        elif arch in user:
            out[arch] = copy.deepcopy(user[arch])
        else:
            known = ", ".join([*ARCHS, *user])
            hint = "" if arch_file else "; define others with --arch-file"
            raise CxrError(f"architecture {arch!r} is not one of {known}{hint}")
    return out


def network_def(arch: str, defs: dict[str, dict] | None = None, outputs: int = 1) -> dict:
    """A fresh copy of the ``network_def`` of ``arch`` (from ``defs``, else built in) with ``outputs`` outputs."""
    out = copy.deepcopy((defs or ARCHS)[arch])
    if outputs == 1:
        return out
    keys = [k for k in OUTPUT_KEYS if k in out]
    if not keys:
        raise CxrError(
            f"architecture {arch!r} sets none of {', '.join(OUTPUT_KEYS)}; a multi-label cell needs "
            f"one of them to give the network {outputs} outputs"
        )
    out[keys[0]] = outputs
    return out


@functools.lru_cache(maxsize=64)
def _accepts(text: str, size: int) -> bool:
    from monai_cxr.cell.pretrained import min_resolution

    try:
        min_resolution(json.loads(text), candidates=(size,))
    except CxrError as err:
        if "cannot be built" in str(err):
            raise
        return False
    return True


def accepts(definition: dict, size: int) -> bool:
    """Whether the network trains at ``size`` x ``size`` px: one train-mode step gives a finite result and finite
    gradients (``min_resolution``; run once per definition and size)."""
    return _accepts(json.dumps(definition, sort_keys=True), int(size))


def smallest_input(definition: dict, limit: int = 1024) -> int:
    """The smallest square size the network accepts: 1, 2, 4, 8, 16, 32, 48, 64, then powers of two up to ``limit``."""
    sizes = [1, 2, 4, 8, 16, 32, 48, 64] + [2**k for k in range(7, limit.bit_length()) if 2**k <= limit]
    for size in sizes:
        if accepts(definition, size):
            return size
    raise CxrError(
        f"network_def {definition.get('_target_')!r} gives no finite (2, outputs) training result at any size up to "
        f"{limit} px; allowed: a 2-D classifier"
    )


def check_input_size(arch: str, definition: dict, resolutions) -> None:
    """Refuse the grid's resolutions that ``arch`` cannot take, naming the smallest one it can."""
    smallest = min(resolutions)
    if not accepts(definition, smallest):
        raise CxrError(f"resolution {smallest} is below the {smallest_input(definition)} px that {arch} accepts")
