"""The resize cache: every source image decoded once, written at every resolution.

``cache/r{R}.npy`` holds a uint8 array (N, R, R) whose row i is index.csv row i, so
training reads pre-resized arrays through a memory map and never decodes a PNG. Each
image is made square first (``pad``: centred on a black square of its longer side, so no
anatomy is cut; or ``crop``: the centred square of its shorter side), then reduced straight
from that square (side S) to R x R by :func:`~monai_cxr.data.resize.area_resize`: pixel (i, j)
is the mean of the source over [i S/R, (i+1) S/R)^2, partly covered source pixels weighted by
the covered fraction, rounded half to even to uint8. Every resolution is that exact area mean of
the source, never of another resolution (PIL's BOX filter, used before FORMAT 2, is one only at
integer factors).

8-bit images are taken as they are; 16-bit (and float) ones are min-max scaled to 0-255 per
image; colour images are converted to luminance. PNG and JPEG are read with PIL, NIfTI
(``.nii``, ``.nii.gz``) with nibabel (a 2-D slice, see :func:`read_nifti`).

Where the pixels come from is an *image source* (:class:`FileImages` here: one file per
index row; ChestMNIST's :class:`~monai_cxr.data.chestmnist.NpzImages`: rows of ``.npz``
arrays): ``read(resolutions)`` gives its rows at each resolution, ``take(start, stop)`` a
slice of it for one chunk. The builder below knows nothing else about the source.

The build runs in worker processes over chunks of rows and records finished chunks in
``manifest.json``, so a killed build resumes where it stopped. The manifest also holds a
fingerprint of the inputs (ids, paths, file sizes and times, square policy): when it no
longer matches, the cache is rebuilt; resolutions already complete are not redone.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from monai_cxr.data.resize import area_resize
from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_json

FORMAT = 2  # 2: exact area means (area_resize) instead of PIL's BOX filter
SQUARE_POLICIES = ("pad", "crop")
CHUNK = 64


def cache_file(cache_dir: str | os.PathLike, resolution: int) -> Path:
    return Path(cache_dir) / f"r{int(resolution)}.npy"


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """8-bit data as it is; anything else min-max scaled to 0-255 (a flat image becomes 0)."""
    if arr.dtype == np.uint8:
        return arr
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.rint(scaled).astype(np.uint8)


def read_nifti(path: str) -> np.ndarray:
    """A NIfTI image as a 2-D (rows, columns) array.

    Singleton axes are dropped; of a 3-D volume the middle slice along the third axis is
    taken. NIfTI stores (x, y); it is transposed to (y, x) so that an image written by ITK
    (or MONAI's ``SaveImage``) from a PNG reads back the same way round as that PNG.
    """
    import nibabel as nib

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
            return Image.fromarray(to_uint8(read_nifti(path)), mode="L")
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return Image.fromarray(to_uint8(np.asarray(img)), mode="L")
            return img if img.mode == "L" else img.convert("L")
    except FileNotFoundError:
        raise CxrError(f"image {path} does not exist") from None
    except CxrError:
        raise
    except Exception as exc:  # any decoder failure (PIL, zlib, nibabel) is a bad file
        raise CxrError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


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
        raise CxrError(f"resolution {max(too_big)} exceeds the source size of {path} "
                       f"({side} px after making it square); use resolutions <= {side}")
    return area_resize(np.asarray(img), resolutions)


class FileImages:
    """The image source of ordinary datasets: one image file per index row."""

    parallel = True  # rows decode independently, so chunks can go to worker processes

    def __init__(self, paths, square: str = "pad"):
        self.paths, self.square = [str(p) for p in paths], square

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, start: int, stop: int) -> "FileImages":
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


def images_for(index: pd.DataFrame, square: str = "pad"):
    """The image source of an index: ChestMNIST's ``FILE.npz#split/i`` rows, else image files."""
    from monai_cxr.data.chestmnist import NpzImages, is_reference

    paths = index["path"].astype(str)
    if len(paths) and is_reference(paths.iloc[0]):
        return NpzImages.from_references(paths)
    return FileImages(paths, square)


def fingerprint(index: pd.DataFrame, policy: str, images=None) -> str:
    """Identify the cache's inputs: ids, the source's stamps (paths, sizes, times), policy."""
    images = images if images is not None else images_for(index, policy)
    digest = hashlib.sha1(f"{FORMAT}|{policy}|{len(index)}".encode())
    for image_id, stamp in zip(index["image_id"], images.stamps()):
        digest.update(f"{image_id}|{stamp}\n".encode())
    return digest.hexdigest()


def _build_chunk(args) -> int:
    """Worker: decode rows [start, stop) once and write them into every resolution's array."""
    chunk, start, stop, part, resolutions, cache_dir = args
    for r, rows in part.read(resolutions).items():
        array = np.load(cache_file(cache_dir, r), mmap_mode="r+")
        array[start:stop] = rows
        array.flush()
    return chunk


def _load_manifest(cache_dir: Path) -> dict:
    path = cache_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def check_settings(resolutions, square: str) -> list[int]:
    """The resolutions sorted and unique, or one line on a bad resolution or square policy."""
    if square not in SQUARE_POLICIES:
        raise CxrError(f"square policy {square!r} is not one of {', '.join(SQUARE_POLICIES)}")
    resolutions = sorted({int(r) for r in resolutions})
    bad = [r for r in resolutions if r <= 0]
    if bad:
        raise CxrError(f"resolution {bad[0]} is not a positive integer")
    return resolutions


def build_cache(index: pd.DataFrame, cache_dir: str | os.PathLike, resolutions, square: str = "pad",
                workers: int = 0, echo=print, progress: bool = True, images=None) -> dict:
    """Build (or finish, or reuse) the cache for ``index`` at ``resolutions``; return the manifest.

    ``images`` is the image source of the index rows (default: :func:`images_for`).
    """
    from tqdm.auto import tqdm

    resolutions = check_settings(resolutions, square)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(index)
    images = images if images is not None else images_for(index, square)
    if len(images) != n:
        raise CxrError(f"the image source has {len(images)} rows but the index {n}")
    fp = fingerprint(index, square, images)
    manifest = _load_manifest(cache_dir)
    if manifest.get("format") != FORMAT or manifest.get("fingerprint") != fp:
        if manifest:
            echo("cache: inputs changed, rebuilding")
        for old in cache_dir.glob("r*.npy"):
            old.unlink()
        manifest = {"format": FORMAT, "fingerprint": fp, "square": square, "n_images": n,
                    "complete": [], "building": None}
        write_json(cache_dir / "manifest.json", manifest)  # never lists deleted arrays
    todo = [r for r in resolutions if r not in manifest["complete"]]
    if not todo:
        echo(f"cache: {', '.join(map(str, resolutions))} px up to date ({n} images)")
        return manifest

    images.check(todo)  # fail fast on a too-small or unreadable source
    origins = {str(r): images.origin(r) for r in todo}
    if not isinstance(images, FileImages):  # say where each resolution comes from
        for r in todo:
            echo(f"cache: {r} px {origins[str(r)]}")
    building = manifest.get("building") or {}
    resume = (building.get("resolutions") == todo and building.get("chunk") == CHUNK
              and all(cache_file(cache_dir, r).is_file() for r in todo))
    if not resume:
        for r in todo:
            np.lib.format.open_memmap(cache_file(cache_dir, r), mode="w+", dtype=np.uint8,
                                      shape=(n, r, r)).flush()
        building = {"resolutions": todo, "chunk": CHUNK, "done": []}
    manifest["building"] = building
    done = set(building["done"])
    n_chunks = (n + CHUNK - 1) // CHUNK
    jobs = [(c, c * CHUNK, min(n, (c + 1) * CHUNK), images.take(c * CHUNK, min(n, (c + 1) * CHUNK)),
             todo, str(cache_dir)) for c in range(n_chunks) if c not in done]
    if done:
        echo(f"cache: resuming, {len(done)} of {n_chunks} chunks already built")
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs))) if images.parallel else 1

    def record(final: bool = False, _last=[0.0]):
        if final or time.monotonic() - _last[0] > 0.5:
            building["done"] = sorted(done)
            write_json(cache_dir / "manifest.json", manifest)
            _last[0] = time.monotonic()

    bar = tqdm(total=n, initial=min(n, len(done) * CHUNK), unit="img", disable=not progress,
               desc=f"cache {'/'.join(map(str, todo))} px", leave=False)
    pool = multiprocessing.get_context().Pool(workers) if workers > 1 else None
    finished = pool.imap_unordered(_build_chunk, jobs) if pool else map(_build_chunk, jobs)
    try:
        for chunk in finished:
            done.add(chunk)
            bar.update(min(n, (chunk + 1) * CHUNK) - chunk * CHUNK)
            record()
    finally:
        bar.close()
        record(final=True)
        if pool:
            pool.terminate()
        if hasattr(images, "close"):
            images.close()
    manifest["complete"] = sorted(set(manifest["complete"]) | set(todo))
    manifest["origin"] = {**manifest.get("origin", {}), **origins}
    manifest["building"] = None
    write_json(cache_dir / "manifest.json", manifest)
    echo(f"cache: built {', '.join(map(str, todo))} px for {n} images in {cache_dir}")
    return manifest


def complete_resolutions(cache_dir: str | os.PathLike) -> list[int]:
    """The resolutions the cache holds in full (per its manifest; none without one)."""
    return sorted(int(r) for r in _load_manifest(Path(cache_dir)).get("complete", []))


def open_cache(cache_dir: str | os.PathLike, resolution: int) -> np.ndarray:
    """The cached images at ``resolution`` as a read-only memory map (N, R, R)."""
    complete = complete_resolutions(cache_dir)
    if int(resolution) not in complete:
        have = ", ".join(map(str, complete)) or "none"
        raise CxrError(f"resolution {resolution} is not in the cache {cache_dir} (complete: {have}); "
                       f"run `monai-cxr prepare --resolutions ...` with it")
    return np.load(cache_file(cache_dir, resolution), mmap_mode="r")
