"""Image files for the inference tests: one picture written as PNG (8/16-bit), DICOM and NIfTI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image


def full_range(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (uint8) with one 0 and one 255, so that min-max scaling of any encoding gives it back."""
    out = np.array(pixels, dtype=np.uint8)
    out.flat[0], out.flat[1] = 0, 255
    return out


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
) -> Path:
    """A DICOM Part 10 file (preamble, ``DICM``) holding ``pixels`` (uint8 or uint16, grey or RGB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=pixels.dtype.itemsize * 8)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_encodings(folder: Path, pixels: np.ndarray) -> dict[str, Path]:
    """``pixels`` (uint8, spanning 0-255) in every encoding that must read back as exactly ``pixels``."""
    folder.mkdir(parents=True, exist_ok=True)
    wide = pixels.astype(np.uint16) * 257  # 0-65535
    files = {
        name: folder / name
        for name in (
            "png8.png",
            "png16.png",
            "mono2.dcm",
            "mono1.dcm",
            "rescaled.dcm",
            "uid_named.1.2.840",
            "image.nii.gz",
        )
    }
    Image.fromarray(pixels).save(files["png8.png"])
    Image.fromarray(wide).save(files["png16.png"])
    write_dicom(files["mono2.dcm"], wide)
    write_dicom(files["mono1.dcm"], 65535 - wide, photometric="MONOCHROME1")  # higher values darker
    # stored 65535 - v with slope -1, intercept 65535: the modality values are v again
    write_dicom(files["rescaled.dcm"], 65535 - wide, slope=-1, intercept=65535)
    write_dicom(files["uid_named.1.2.840"], wide)  # no DICOM suffix: found by its DICM marker
    nib.save(nib.Nifti1Image(pixels.T.astype(np.int16) * 4 - 100, np.eye(4)), files["image.nii.gz"])  # (x, y)
    return files
