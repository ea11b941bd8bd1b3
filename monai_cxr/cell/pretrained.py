"""Start a cell from real weights: torchvision ImageNet files, an earlier cell's model, any MONAI network.

ImageNet files have an RGB stem and a 1000-class head; a cell's network has one grey input channel and one
output. The head is left as the network made it. The stem becomes one channel with ImageNet's per-channel
input statistics folded into it (see ``GREY_MEAN``), so the network expects the fixed input
``(x / 255 - GREY_MEAN) / GREY_STD`` for uint8 ``x``; the record returned says so, for the bundle to apply.

Network definitions from a user's file are data: they are checked before MONAI instantiates them, and the
smallest input a network accepts is measured on the network itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from monai_cxr.errors import CxrError

__all__ = [
    "GREY_MEAN",
    "GREY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "build_network",
    "check_pretrained",
    "load_arch_file",
    "load_pretrained",
    "min_resolution",
    "pretrained_network",
]

# How images reach a cell's network (the bundle's ``normalize``): ``image`` z-scores each image (scratch and
# chest-X-ray starts); ``imagenet`` is the fixed grey input of a folded ImageNet stem (below).
NORMALIZATIONS = ("image", "imagenet")

# torchvision's ImageNet input statistics (RGB, on x / 255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The grey input of a folded stem: (x / 255 - GREY_MEAN) / GREY_STD. Folding makes the stem exact for any
# choice away from the image border; the channel averages keep the stem's zero padding within 0.19 SD of
# what each ImageNet channel's padding meant.
GREY_MEAN = sum(IMAGENET_MEAN) / 3
GREY_STD = sum(IMAGENET_STD) / 3

# torchvision DenseNet layer names, current (norm1) and legacy (norm.1), -> MONAI's (layers.norm1);
# the idea of monai.networks.nets.densenet._load_state_dict, widened to take both spellings.
_DENSELAYER = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_RENAME_PREFIX = (("classifier.", "class_layers.out."),)
# A BatchNorm step counter: absent from the published torchvision files and irrelevant to the weights.
_COUNTER = "num_batches_tracked"
_WRAPPERS = ("state_dict", "model")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_state(path: Path) -> dict:
    """The tensors of a weights file: bare, ``{"state_dict": ...}`` or ``{"model": ...}`` (a cell's model.pt)."""
    import torch

    allowed = "allowed: a PyTorch state dict, bare or as {'state_dict': ...} or {'model': ...}"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors alike; their text spans many lines
        raise CxrError(f"pretrained weights file {path} cannot be read ({type(exc).__name__}); {allowed}") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not state:
        raise CxrError(f"pretrained weights file {path} holds no tensors; {allowed}")
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel / DDP wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _monai_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        match = _DENSELAYER.match(key)
        if match:
            key = f"{match[1]}.layers.{match[2]}{match[3]}.{match[4]}"
        for old, new in _RENAME_PREFIX:
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    return renamed


def _head_keys(network) -> set[str]:
    """The state-dict names of the last Linear layer: the classifier a pretrained file does not provide."""
    import torch

    linears = [name for name, module in network.named_modules() if isinstance(module, torch.nn.Linear)]
    if not linears:
        return set()
    prefix = f"{linears[-1]}." if linears[-1] else ""
    return {f"{prefix}weight", f"{prefix}bias"}


def _stem_key(src: dict, dst: dict) -> str | None:
    """The convolution whose file weights take 3 input channels where the network's take 1."""
    for key, value in dst.items():
        other = src.get(key)
        if (
            other is not None
            and value.ndim >= 3
            and other.ndim == value.ndim
            and other.shape[1] == 3
            and value.shape[1] == 1
            and other.shape[0] == value.shape[0]
            and other.shape[2:] == value.shape[2:]
        ):
            return key
    return None


def _norm_after(network, conv_name: str, channels: int) -> str | None:
    """The BatchNorm the stem feeds: the next conv or norm module registered after it, if it is one."""
    import torch

    modules = list(network.named_modules())
    names = [name for name, _ in modules]
    if conv_name not in names:
        return None
    for name, module in modules[names.index(conv_name) + 1 :]:
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return name if module.num_features == channels and module.track_running_stats else None
        if isinstance(module, (torch.nn.modules.conv._ConvNd, torch.nn.modules.batchnorm._NormBase)):
            return None
    return None


def _fold_stem(network, src: dict, key: str) -> dict:
    """Turn the RGB stem into one grey channel with ImageNet's per-channel normalisation folded in.

    The RGB net sees ``(g - m_c) / s_c`` in channel ``c`` for a grey image ``g = x / 255``; the grey net gets
    ``h = (g - GREY_MEAN) / GREY_STD``. Then ``conv_w(rgb) = conv_w'(h) + b`` with ``w' = GREY_STD * sum_c w_c / s_c``
    and the per-output constant ``b = sum_{c,k} w_c (GREY_MEAN - m_c) / s_c``, which moves into the following
    BatchNorm's running mean (or the conv bias). Exact wherever the kernel does not reach the zero padding.
    """
    import torch

    weight = src[key].double()
    shape = (1, 3) + (1,) * (weight.ndim - 2)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(shape)
    folded = (weight * (GREY_STD / std)).sum(1, keepdim=True)
    shift = (weight * ((GREY_MEAN - mean) / std)).sum(dim=tuple(range(1, weight.ndim)))
    out = dict(src)
    out[key] = folded.to(src[key].dtype)
    conv_name = key.removesuffix(".weight")
    norm = _norm_after(network, conv_name, weight.shape[0])
    bias_key = f"{conv_name}.bias"
    if norm is not None and f"{norm}.running_mean" in src:
        target = f"{norm}.running_mean"
        out[target] = (src[target].double() - shift).to(src[target].dtype)
    elif bias_key in src:
        target = bias_key
        out[target] = (src[target].double() + shift).to(src[target].dtype)
    else:  # nowhere to put it; a BatchNorm in training mode removes a constant shift anyway
        target = None
    return {"state": out, "stem": key, "shift_into": target}


def load_pretrained(network, path: str | None, min_fraction: float = 0.9):
    """Load a local torchvision-format or cell weights file into ``network``; return ``(network, record)``.

    Names are mapped to MONAI's (DenseNet's current and legacy torchvision spellings, ``classifier``), tensors
    are copied with ``monai.networks.utils.copy_model_state`` where name and shape match, an RGB stem is folded
    to one channel, and the network keeps its own head when the file's differs (1000 ImageNet classes). Fewer
    than ``min_fraction`` of the backbone's tensors matching means the file is for another architecture: refused.

    The record: ``source``, ``sha256``, ``loaded`` / ``total`` (the network's state-dict tensors, BatchNorm
    step counters aside), ``skipped`` (names not loaded) and ``normalization``: for a folded stem
    ``{"scale": 1/255, "mean": GREY_MEAN, "std": GREY_STD, "folded_imagenet_stats": True}``, meaning input
    ``(x * scale - mean) / std``; ``None`` when the file was already one-channel (an earlier cell's model):
    keep the normalisation that file was trained with. Without a path: ``{"source": "scratch"}``.
    """
    if not path:
        return network, {"source": "scratch"}
    if not isinstance(min_fraction, (int, float)) or not 0 < min_fraction <= 1:
        raise CxrError(f"min_fraction {min_fraction!r} is not allowed; use a number in (0, 1]")
    from monai.networks.utils import copy_model_state

    file = Path(path)
    if not file.is_file():
        raise CxrError(f"pretrained weights file {path} not found; give a local file (nothing is downloaded)")
    src = _monai_names(_read_state(file))
    dst = network.state_dict()
    stem = _stem_key(src, dst)
    folded = _fold_stem(network, src, stem) if stem else None
    if folded:
        src = folded["state"]
    new_state, updated, _ = copy_model_state(dst, src, inplace=False)

    counted = [k for k in dst if not k.endswith(_COUNTER)]
    head = _head_keys(network)
    backbone = [k for k in counted if k not in head]
    updated = set(updated)
    missed = [k for k in backbone if k not in updated]
    if len(backbone) - len(missed) < min_fraction * len(backbone):
        reasons = [
            f"{k} {tuple(src[k].shape)} vs {tuple(dst[k].shape)}" if k in src else f"{k} not in file" for k in missed
        ]
        raise CxrError(
            f"pretrained weights file {path} matches {len(backbone) - len(missed)} of the network's "
            f"{len(backbone)} backbone tensors, fewer than {min_fraction:.0%} (is it another architecture?); "
            f"first mismatches: {'; '.join(reasons[:3])}"
        )
    network.load_state_dict(new_state)
    normalization = None
    if folded:
        normalization = {
            "scale": 1 / 255,
            "mean": GREY_MEAN,
            "std": GREY_STD,
            "folded_imagenet_stats": True,
            "stem": folded["stem"],
            "shift_into": folded["shift_into"],
        }
    record = {
        "source": str(path),
        "sha256": _sha256(file),
        "loaded": sum(k in updated for k in counted),
        "total": len(counted),
        "skipped": [k for k in counted if k not in updated],
        "normalization": normalization,
    }
    return network, record


def pretrained_network(
    network, path: str | None = None, record_file: str | None = None, min_fraction: float = 0.9, root: str | None = None
):
    """Bundle-facing: load ``path`` into ``network`` (scratch when empty) and write the record to ``record_file``.

    A relative ``path`` is relative to ``root`` (the bundle's ``bundle_root``: a study's own cells are named
    relative to the cell, so the study can move).
    """
    if path and root and not os.path.isabs(path):
        path = os.path.normpath(os.path.join(root, path))
    network, record = load_pretrained(network, path, min_fraction=min_fraction)
    if record_file:
        from monai_cxr.fileio import write_json

        write_json(record_file, record)
    return network


# --- any network, from a user's file of network_def snippets ---------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _check_value(value, where: str) -> None:
    """Refuse what MONAI's parser would execute, reference or rewrite: configs are data, never code."""
    if isinstance(value, str):
        if value.startswith("$") or any(ch in value for ch in "@%#"):
            raise CxrError(f"{where}: {value!r} is not allowed; plain values only (no '$' start, no '@', '%' or '#')")
    elif isinstance(value, dict):
        for key, item in value.items():
            if str(key).startswith("_"):
                raise CxrError(f"{where}: key {key!r} is not allowed; only the top level may name a '_target_'")
            _check_value(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise CxrError(f"{where}: {value!r} is not allowed; use JSON values")


def _check_def(network_def, where: str) -> None:
    """Check one ``network_def``: a ``_target_`` naming a torch Module class or a MONAI network, plain arguments."""
    if not isinstance(network_def, dict) or not isinstance(network_def.get("_target_"), str):
        raise CxrError(f"{where} is not allowed; it must be an object with a '_target_' string")
    target = network_def["_target_"]
    if not _TARGET.match(target):
        raise CxrError(f"{where}._target_ {target!r} is not allowed; give a class name such as 'EfficientNetBN'")
    for key, value in network_def.items():
        if key == "_target_":
            continue
        if key.startswith("_"):
            raise CxrError(f"{where}: key {key!r} is not allowed; only '_target_' and the network's arguments")
        _check_value(value, f"{where}.{key}")

    from pydoc import (
        locate,  # what monai.utils.module.instantiate resolves a _target_ with
    )

    import torch
    from monai.bundle import ConfigComponent

    try:
        component = locate(ConfigComponent(config=network_def).resolve_module_name())
    except Exception:  # an ambiguous short name, a missing module
        component = None
    is_module = isinstance(component, type) and issubclass(component, torch.nn.Module)
    is_monai_factory = callable(component) and getattr(component, "__module__", "").startswith("monai.networks.")
    if not (is_module or is_monai_factory):
        raise CxrError(
            f"{where}._target_ {target!r} is not allowed; it must name a torch.nn.Module class or a MONAI network"
        )


def load_arch_file(path: str) -> dict[str, dict]:
    """Read a JSON object of named MONAI ``network_def`` snippets, each checked as data; return it."""
    file = Path(path)
    try:
        archs = json.loads(file.read_text())
    except FileNotFoundError:
        raise CxrError(f"architecture file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CxrError(f"architecture file {path} is not JSON ({type(exc).__name__}); allowed: an object") from None
    if not isinstance(archs, dict) or not archs:
        raise CxrError(f"architecture file {path} is not allowed; it must be a non-empty object of network_defs")
    for name, network_def in archs.items():
        if not _NAME.match(name):
            raise CxrError(
                f"architecture file {path}: name {name!r} is not allowed; use 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        _check_def(network_def, f"architecture file {path}: {name}")
    return archs


def build_network(network_def: dict):
    """The network of a ``network_def`` (checked as data first), built on the CPU; a constructor error is one line."""
    _check_def(network_def, "network_def")
    from monai.bundle import ConfigParser

    try:
        return ConfigParser({"network_def": network_def}).get_parsed_content("network_def")
    except Exception as exc:
        while exc.__cause__ is not None:  # MONAI wraps the constructor's own error in a long RuntimeError
            exc = exc.__cause__
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CxrError(f"network_def {network_def['_target_']!r} cannot be built: {first}") from None


def check_pretrained(network_def: dict, path: str, min_fraction: float = 0.9) -> dict:
    """The record ``load_pretrained`` would give for ``path`` in a fresh network of ``network_def``; refusals alike.

    For ``generate``: a file for another architecture is refused before any cell trains.
    """
    return load_pretrained(build_network(network_def), path, min_fraction=min_fraction)[1]


def min_resolution(network_def: dict, candidates=(8, 16, 32, 48, 64)) -> int:
    """The smallest square input in ``candidates`` at which the network trains: one training step gives a finite
    (2, outputs) result and finite gradients.

    Measured on the network itself (MONAI's ConfigParser, CPU, train mode, a batch of 2 random images z-scored
    per image as training does), not read from a table. Train mode, because that is where a too-small input
    breaks: at 1 px every image z-scores to 0, batch normalisation then sees no variance, and the backward pass
    gives NaN gradients (so NaN weights and scores) although an eval-mode forward gives a result.
    """
    import torch

    from monai_cxr.cell.batches import normalize_images

    network = build_network(network_def)
    network.train()
    convs = [p for p in network.parameters() if p.ndim == 4]
    channels = convs[0].shape[1] if convs else 1
    generator = torch.Generator().manual_seed(0)
    for size in sorted(candidates):
        network.zero_grad(set_to_none=True)
        images = normalize_images(torch.rand(2, channels, size, size, generator=generator))
        try:
            with torch.enable_grad():
                out = network(images)
                if isinstance(out, torch.Tensor) and out.requires_grad:  # as a cell's loss: one negative, one positive
                    target = torch.arange(2, dtype=torch.float32).reshape(2, *[1] * (out.ndim - 1)).expand(out.shape)
                    torch.nn.functional.binary_cross_entropy_with_logits(out.float(), target).backward()
        except Exception:  # too small: a pooling or convolution ran out of pixels, or BatchNorm of one value
            continue
        if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == 2):
            continue
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        if torch.isfinite(out.detach()).all() and all(torch.isfinite(g).all() for g in grads):
            return int(size)
    raise CxrError(
        f"network_def {network_def['_target_']!r} gives no finite (2, outputs) training result at any of the sizes "
        f"{sorted(candidates)}; allowed: a 2-D classifier"
    )
