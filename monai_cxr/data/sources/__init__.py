"""The dataset sources, by ``--dataset`` name: one module each, one line each here.

Each module defines a class implementing :class:`~monai_cxr.data.sources.base.Source`. The
registry names modules rather than importing them, so listing the choices (``--help``)
stays light; :func:`get_source` imports the one asked for.
"""

from __future__ import annotations

import importlib

from monai_cxr.errors import CxrError

__all__ = ["SOURCES", "get_source"]

SOURCES = {
    "nih": "monai_cxr.data.sources.nih:NihSource",
    "chexpert": "monai_cxr.data.sources.chexpert:CheXpertSource",
    "chestmnist": "monai_cxr.data.sources.chestmnist:ChestMnistSource",
    "csv": "monai_cxr.data.sources.table:TableSource",
}


def get_source(name: str):
    """An instance of the source registered as ``name``, or a CxrError listing the sources."""
    if name not in SOURCES:
        raise CxrError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    module, cls = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), cls)()
