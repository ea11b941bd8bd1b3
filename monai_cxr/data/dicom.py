"""Reading a DICOM radiograph as 8-bit grey, the way :func:`~monai_cxr.data.images.read_image` reads a 16-bit PNG.

DICOM is read only for inference (``monai-cxr predict``, the bundle's ``inference.json``); no study source
is DICOM. pydicom is an optional dependency (``pip install monai-cxr[dicom]``), imported on first use so
that everything else works without it.

The stored values go through the modality LUT (``RescaleSlope`` / ``RescaleIntercept``), are min-max scaled
to 0-255 per image as 16-bit PNGs are (8-bit data without a rescale is taken as it is) and, for
``MONOCHROME1`` (where higher values are darker), inverted (``255 - v``), so that bone is bright as in
every other source. The window (VOI LUT) is not applied: the study's images are min-max scaled, not windowed.
Colour images become luminance as colour PNGs do.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from monai_cxr.data.images import to_uint8
from monai_cxr.errors import CxrError

__all__ = ["DICOM_SUFFIXES", "is_dicom", "read_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")
_MAGIC_OFFSET = 128  # a DICOM file (Part 10) has a 128-byte preamble, then b"DICM"


def is_dicom(path: str | os.PathLike) -> bool:
    """A DICOM file by its suffix, or by the ``DICM`` marker after the preamble (files named by UID)."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise CxrError("reading DICOM needs pydicom: pip install 'monai-cxr[dicom]'") from None
    return pydicom


def _modality_lut(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values in modality units; an identity rescale keeps the stored dtype (8-bit stays as it is)."""
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" not in ds and slope == 1 and intercept == 0:
        return arr
    try:
        from pydicom.pixels import apply_modality_lut  # pydicom >= 3
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return apply_modality_lut(arr, ds)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey from colour: PIL's own conversion for 8-bit (as colour PNGs are read), ITU-R 601 weights beyond."""
    if rgb.dtype == np.uint8:
        return np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """One DICOM radiograph as a uint8 (rows, columns) array, or a CxrError naming the file."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(os.fspath(path), force=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise CxrError(f"cannot read image {path}: DICOM with {frames} frames; a radiograph has one")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        arr = ds.pixel_array
    except FileNotFoundError:
        raise CxrError(f"image {path} does not exist") from None
    except CxrError:
        raise
    except Exception as exc:  # any pydicom failure (no pixel data, unsupported transfer syntax) is a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CxrError(f"cannot read image {path}: {reason}") from None
    if arr.ndim == 3 and arr.shape[-1] == 3:  # RGB (pydicom converts YBR to RGB)
        return to_uint8(_luminance(arr), f"image {path}")
    if arr.ndim != 2:
        raise CxrError(f"cannot read image {path}: DICOM pixel data of shape {arr.shape} is not one grey image")
    grey = to_uint8(_modality_lut(arr, ds), f"image {path}")
    return 255 - grey if photometric == "MONOCHROME1" else grey
