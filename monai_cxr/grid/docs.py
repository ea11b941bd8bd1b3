"""The documents of a cell's bundle: ``metadata.json``, ``docs/README.md`` and ``docs/data_license.txt``.

They say what the cell is (finding, resolution, architecture, how its network starts), which
data it learns from and under what terms, and which package versions generated it. User text
goes into them only as a plain finding name (see :func:`label_display`) inside a sentence, so
no metadata string is ever a MONAI ``$`` expression, ``%`` macro or ``@`` reference.
"""

from __future__ import annotations

import copy
import re
from importlib import metadata as importlib_metadata
from pathlib import Path

from monai_cxr.cell.readme import result_section
from monai_cxr.grid.cells import Cell, label_slug
from monai_cxr.grid.settings import GridSettings

__all__ = ["cell_metadata", "cell_readme", "data_license", "label_display", "versions"]

REQUIRED_PACKAGES = ("monai-cxr", "pytorch-ignite", "tensorboard", "pandas", "scipy", "fire")
ARCH_NAMES = {"resnet34": "ResNet34", "densenet121": "DenseNet121"}

PHANTOM_TERMS = """\
Data: a synthetic phantom made by monai-cxr (`monai-cxr synth`), written in the layout of NIH ChestX-ray14.
The images are drawn by a program; they are not radiographs of any person, and results on them say nothing
about real radiographs.

Terms: like monai-cxr itself, the Apache License, Version 2.0 (see LICENSE beside docs/).
"""
TERMS = {
    "nih": (
        "NIH ChestX-ray14 radiographs",
        """\
Data: NIH ChestX-ray14 (ChestX-ray8), provided by the NIH Clinical Center, https://nihcc.app.box.com/v/ChestXray-NIHCC

Terms (the NIH Clinical Center's): there are no restrictions on the use of the NIH chest x-ray images, but
whoever uses them is asked to
  - link to the NIH download site above,
  - cite: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database
    and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017,
  - acknowledge the NIH Clinical Center as the data provider.
""",
    ),
    "chexpert": (
        "CheXpert radiographs",
        """\
Data: CheXpert, Stanford ML Group and Stanford University School of Medicine,
https://stanfordmlgroup.github.io/competitions/chexpert/

Terms: the Stanford University School of Medicine CheXpert Dataset Research Use Agreement, which each user
accepts when downloading: personal, non-commercial research use; no redistribution of the images; no attempt to
identify any patient (the agreement itself is what binds; read it).
Cite: Irvin J, Rajpurkar P, et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert
Comparison. AAAI 2019.
""",
    ),
    "chestmnist": (
        "ChestMNIST (MedMNIST) images",
        """\
Data: ChestMNIST of MedMNIST (v2 / MedMNIST+), https://medmnist.com, derived from NIH ChestX-ray14.

Terms: Creative Commons Attribution 4.0 International (CC BY 4.0), https://creativecommons.org/licenses/by/4.0/
Cite: Yang J, Shi R, Wei D, et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification. Scientific Data 2023;10:41. The source data are NIH ChestX-ray14 (NIH Clinical Center):
cite Wang X et al., IEEE CVPR 2017, and acknowledge the NIH Clinical Center.
""",
    ),
    "csv": (
        "the images of the study's own table (--dataset csv)",
        """\
Data: the images listed in the study's own table (`monai-cxr prepare --dataset csv`).

Terms: the terms of your own data. monai-cxr knows nothing about where these images come from; whoever shares
this bundle or its results must honour them.
""",
    ),
}


def versions() -> dict[str, str]:
    """The metadata.json version fields of the packages installed here (read without importing them)."""

    def version(name):
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return None

    packages = {name: version(name) for name in REQUIRED_PACKAGES}
    return {
        "monai_version": version("monai"),
        "pytorch_version": version("torch"),
        "numpy_version": version("numpy"),
        "required_packages_version": {k: v for k, v in packages.items() if v is not None},
    }


def label_display(label: str) -> str:
    """The label as written when it is plain (letters, digits, ``_``, ``-``, spaces), else its folder slug."""
    return label if re.fullmatch(r"[A-Za-z0-9_\- ]+", label) else label_slug(label)


def _data(study: dict) -> tuple[str, str]:
    """What the images are, in a few words, and the text of data_license.txt."""
    if study.get("synthetic"):
        return "synthetic phantom images (`monai-cxr synth`, not radiographs)", PHANTOM_TERMS
    dataset = str((study.get("data") or {}).get("dataset") or "unknown")
    if dataset in TERMS:
        return TERMS[dataset]
    name = label_display(dataset)
    terms = (
        f"Data: the study's {name} images (study.json data.dataset).\n\n"
        f"Terms: those of the {name} data; monai-cxr does not know them.\n"
    )
    return f"the study's {name} images", terms


def data_license(study: dict) -> str:
    return _data(study)[1]


def _init(start: dict | None) -> str:
    """How the network starts, in words (``start``: the arch's ``--pretrained`` file as generate resolved it)."""
    if not start:
        return "from scratch (random initial weights)"
    path = Path(start["path"])
    if start["normalize"] == "imagenet":
        return f"from the ImageNet weights in `{path.name}`, inputs normalised with ImageNet's fixed statistics"
    if path.name == "model.pt" and path.parent.name == "models":
        return f"from the model of cell `{path.parent.parent.name}`"
    return f"from the weights in `{path.name}`"


def _findings(cell: Cell) -> str:
    """The cell's finding(s) in plain words."""
    names = [label_display(label) for label in (cell.labels or (cell.label,))]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def cell_metadata(template: dict, cell: Cell, settings: GridSettings, study: dict, start: dict | None = None) -> dict:
    """The template's metadata.json filled in for ``cell``, with the versions installed here."""
    meta = copy.deepcopy(template)
    arch = ARCH_NAMES.get(cell.arch, cell.arch)
    finding = _findings(cell)
    images = _data(study)[0]
    meta.update(versions())
    outputs = (
        "The network returns one logit per finding, in the order of cell.json's labels; postprocessing "
        "applies a sigmoid to each"
        if cell.labels
        else "The network returns one logit; postprocessing applies a sigmoid"
    )
    meta["name"] = f"{'Multi-label ' if cell.labels else ''}{finding} at {cell.resolution} px, {arch} (monai-cxr cell)"
    meta["description"] = (
        f"One cell of a monai-cxr study (after Sabottke & Spieler, Radiol AI 2020): a {arch} trained {_init(start)} "
        f"to detect {finding} on {images} resized to {cell.resolution} x {cell.resolution} px, seed {cell.seed}. "
        f"{outputs} to give the probability `pred`. "
        f"The exact label{'s are' if cell.labels else ' is'} in cell.json beside configs/."
    )
    meta["data_source"] = (
        f"{images[0].upper() + images[1:]}, from the study's resize cache "
        f"data/cache/r{cell.resolution}.npy (made by `monai-cxr prepare`); "
        f"terms in docs/data_license.txt"
    )
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [cell.resolution, cell.resolution]
    if start and start["normalize"] == "imagenet":
        meta["image_classes"] = (
            "one channel, grey radiograph, normalised with ImageNet's fixed statistics: (x / 255 - 0.449) / 0.226"
        )
    if cell.labels:
        k = len(cell.labels)
        meta["task"] = f"Multi-label classification of {k} findings on chest radiographs"
        meta["label_classes"] = "per finding: 0 absent, 1 present, -1 unknown (left out of loss and AUC)"
        meta["pred_classes"] = "per finding, the probability that it is present"
        pred = meta["network_data_format"]["outputs"]["pred"]
        pred.update(
            num_channels=k,
            spatial_shape=[k],
            channel_def={str(j): f"{label_display(label)} present" for j, label in enumerate(cell.labels)},
        )
    return meta


def cell_readme(template: str, cell: Cell, settings: GridSettings, study: dict, start: dict | None = None) -> str:
    """The cell's README: what it is, its result section (filled in by the run), then the template's README."""
    arch = ARCH_NAMES.get(cell.arch, cell.arch)
    finding = _findings(cell)
    images = _data(study)[0]
    synthetic = (
        "\n\nThe images are synthetic: results of this cell say nothing about real radiographs."
        if study.get("synthetic")
        else ""
    )
    body = template.split("\n", 1)[1].lstrip("\n") if template.startswith("# ") else template
    kind = "one network for all of " if cell.labels else ""
    return (
        f"# {'Multi-label: ' if cell.labels else ''}{finding}: {arch} at {cell.resolution} x {cell.resolution} px, "
        f"seed {cell.seed}\n\n"
        f"A cell of a monai-cxr study: a {arch} trained {_init(start)} to detect {kind}**{finding}** on {images} "
        f"resized to {cell.resolution} x {cell.resolution} px. `cell.json` holds the exact "
        f"label{'s' if cell.labels else ''}; the data's terms are in `docs/data_license.txt`.{synthetic}\n\n"
        f"## Result\n\n{result_section()}\n\n"
        f"## About this bundle\n\n{body}"
    )
