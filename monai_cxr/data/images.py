"""Reading one image as 8-bit grey, making it square, resizing it, and the file-per-row image source.

8-bit images are taken as they are; 16-bit (and float) ones are min-max scaled to 0-255 per
image; colour images are converted to luminance. PNG and JPEG are read with PIL, NIfTI
(``.nii``, ``.nii.gz``) with nibabel (a 2-D slice, see :func:`read_nifti`).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from PIL import Image

from monai_cxr.data.resize import area_resize
from monai_cxr.errors import CxrError

__all__ = ["IMAGE_SUFFIXES", "FileImages", "make_square", "read_image", "read_nifti", "resized", "to_uint8"]

# The image files a table may name (PIL and nibabel read them).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")


def to_uint8(arr: np.ndarray, where: str = "the image") -> np.ndarray:
    """8-bit data as it is; anything else min-max scaled to 0-255 (a flat image becomes 0).

    A NaN or Inf pixel (float data only) is a CxrError naming ``where``: min-max scaling would
    turn the whole image into NaN, which casts to a black (all-zero) image.
    """
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise CxrError(
                f"{where} has non-finite pixel values (NaN or Inf) in {bad} of {arr.size} pixels; "
                "only finite values can be scaled to 8-bit grey"
            )
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    half_span = hi / 2 - lo / 2  # halves: hi - lo overflows to Inf for a range beyond 1.8e308
    scaled = (arr / 2 - lo / 2) * (255.0 / half_span) if hi > lo else np.zeros_like(arr)
    return np.rint(scaled).astype(np.uint8)


def read_nifti(path: str) -> np.ndarray:
    """A NIfTI image as a 2-D (rows, columns) array.

    Singleton axes are dropped; of a 3-D volume the middle slice along the third axis is
    taken. NIfTI stores (x, y); it is transposed to (y, x) so that an image written by ITK
    (or MONAI's ``SaveImage``) from a PNG reads back the same way round as that PNG.
    """
    data = np.squeeze(np.asanyarray(nib.load(path).dataobj))
    if data.ndim == 3:
        data = data[:, :, data.shape[2] // 2]
    if data.ndim != 2:
        raise CxrError(f"cannot read image {path}: NIfTI data of shape {data.shape} has no 2-D slice")
    return np.ascontiguousarray(data.T)


def read_image(path: str) -> Image.Image:
    """Decode one image as 8-bit grayscale, or fail with a line naming the file."""
    try:
        if path.lower().endswith((".nii", ".nii.gz")):
            return Image.fromarray(to_uint8(read_nifti(path), f"image {path}"), mode="L")
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return Image.fromarray(to_uint8(np.asarray(img), f"image {path}"), mode="L")
            return img if img.mode == "L" else img.convert("L")
    except FileNotFoundError:
        raise CxrError(f"image {path} does not exist") from None
    except CxrError:
        raise
    except Exception as exc:  # any decoder failure (PIL, zlib, nibabel) is a bad file
        raise CxrError(
            f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def make_square(img: Image.Image, policy: str = "pad") -> Image.Image:
    """Pad (black, centred) or centre-crop a non-square image to a square."""
    w, h = img.size
    if w == h:
        return img
    if policy == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return img.crop((left, top, left + side, top + side))
    side = max(w, h)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def resized(path: str, resolutions, policy: str = "pad") -> dict[int, np.ndarray]:
    """The cache's content for one image: ``{R: uint8 array (R, R)}`` for each resolution."""
    img = make_square(read_image(path), policy)
    side = img.size[0]
    too_big = [r for r in resolutions if r > side]
    if too_big:
        raise CxrError(
            f"resolution {max(too_big)} exceeds the source size of {path} "
            f"({side} px after making it square); use resolutions <= {side}"
        )
    return area_resize(np.asarray(img), resolutions)


class FileImages:
    """The image source of ordinary datasets: one image file per index row."""

    parallel = True  # rows decode independently, so chunks can go to worker processes

    def __init__(self, paths, square: str = "pad"):
        self.paths, self.square = [str(p) for p in paths], square

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, start: int, stop: int) -> FileImages:
        return FileImages(self.paths[start:stop], self.square)

    def origin(self, resolution: int) -> str:
        return f"area-averaged from the source images ({self.square} to square)"

    def stamps(self):
        """One line per row for the fingerprint: path, file size and modification time."""
        for path in self.paths:
            try:
                st = os.stat(path)
                yield f"{path}|{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                yield f"{path}|absent"

    def check(self, resolutions) -> None:
        """Fail fast on an unreadable or too-small first image, before any array is allocated."""
        resized(self.paths[0], resolutions, self.square)

    def read(self, resolutions) -> dict[int, np.ndarray]:
        """All rows at each resolution: ``{R: uint8 array (n, R, R)}``."""
        out = {r: np.empty((len(self.paths), r, r), dtype=np.uint8) for r in resolutions}
        for row, path in enumerate(self.paths):
            for r, image in resized(path, resolutions, self.square).items():
                out[r][row] = image
        return out
