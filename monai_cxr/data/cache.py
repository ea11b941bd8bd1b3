"""The resize cache: every source image decoded once, written at every resolution.

``cache/r{R}.npy`` holds a uint8 array (N, R, R) whose row i is index.csv row i, so
training reads pre-resized arrays through a memory map and never decodes a PNG. Each
image is made square first (``pad``: centred on a black square of its longer side, so no
anatomy is cut; or ``crop``: the centred square of its shorter side), then area-averaged
(PIL's BOX filter) straight from that square down to R x R: every resolution is an exact
area average of the source, not of another resolution.

8-bit images are taken as they are; 16-bit ones are min-max scaled to 0-255 per image;
colour images are converted to luminance.

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

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_json

FORMAT = 1
SQUARE_POLICIES = ("pad", "crop")
CHUNK = 64


def cache_file(cache_dir: str | os.PathLike, resolution: int) -> Path:
    return Path(cache_dir) / f"r{int(resolution)}.npy"


def read_image(path: str) -> Image.Image:
    """Decode one image as 8-bit grayscale, or fail with a line naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
                return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
            return img if img.mode == "L" else img.convert("L")
    except FileNotFoundError:
        raise CxrError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CxrError(f"cannot read image {path}: {exc}") from None


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
    return {r: np.asarray(img if r == side else img.resize((r, r), Image.BOX)) for r in resolutions}


def fingerprint(index: pd.DataFrame, policy: str) -> str:
    """Identify the cache's inputs: ids, paths, file sizes and modification times, policy."""
    digest = hashlib.sha1(f"{FORMAT}|{policy}|{len(index)}".encode())
    for image_id, path in zip(index["image_id"], index["path"]):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "absent"
        digest.update(f"{image_id}|{path}|{stamp}\n".encode())
    return digest.hexdigest()


def _build_chunk(args) -> int:
    """Worker: decode rows [start, stop) once and write them into every resolution's array."""
    chunk, start, stop, paths, resolutions, policy, cache_dir = args
    arrays = {r: np.load(cache_file(cache_dir, r), mmap_mode="r+") for r in resolutions}
    for row, path in zip(range(start, stop), paths):
        for r, image in resized(path, resolutions, policy).items():
            arrays[r][row] = image
    for array in arrays.values():
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


def build_cache(index: pd.DataFrame, cache_dir: str | os.PathLike, resolutions, square: str = "pad",
                workers: int = 0, echo=print, progress: bool = True) -> dict:
    """Build (or finish, or reuse) the cache for ``index`` at ``resolutions``; return the manifest."""
    from tqdm.auto import tqdm

    if square not in SQUARE_POLICIES:
        raise CxrError(f"square policy {square!r} is not one of {', '.join(SQUARE_POLICIES)}")
    resolutions = sorted({int(r) for r in resolutions})
    bad = [r for r in resolutions if r <= 0]
    if bad:
        raise CxrError(f"resolution {bad[0]} is not a positive integer")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(index)
    fp = fingerprint(index, square)
    manifest = _load_manifest(cache_dir)
    if manifest.get("format") != FORMAT or manifest.get("fingerprint") != fp:
        if manifest:
            echo("cache: inputs changed, rebuilding")
        for old in cache_dir.glob("r*.npy"):
            old.unlink()
        manifest = {"format": FORMAT, "fingerprint": fp, "square": square, "n_images": n,
                    "complete": [], "building": None}
    todo = [r for r in resolutions if r not in manifest["complete"]]
    if not todo:
        echo(f"cache: {', '.join(map(str, resolutions))} px up to date ({n} images)")
        return manifest

    resized(index["path"].iloc[0], todo, square)  # fail fast on a too-small or unreadable source
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
    paths = index["path"].tolist()
    jobs = [(c, c * CHUNK, min(n, (c + 1) * CHUNK), paths[c * CHUNK:(c + 1) * CHUNK], todo, square,
             str(cache_dir)) for c in range(n_chunks) if c not in done]
    if done:
        echo(f"cache: resuming, {len(done)} of {n_chunks} chunks already built")
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))

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
    manifest["complete"] = sorted(set(manifest["complete"]) | set(todo))
    manifest["building"] = None
    write_json(cache_dir / "manifest.json", manifest)
    echo(f"cache: built {', '.join(map(str, todo))} px for {n} images in {cache_dir}")
    return manifest


def open_cache(cache_dir: str | os.PathLike, resolution: int) -> np.ndarray:
    """The cached images at ``resolution`` as a read-only memory map (N, R, R)."""
    manifest = _load_manifest(Path(cache_dir))
    if int(resolution) not in manifest.get("complete", []):
        have = ", ".join(map(str, manifest.get("complete", []))) or "none"
        raise CxrError(f"resolution {resolution} is not in the cache {cache_dir} (complete: {have}); "
                       f"run `monai-cxr prepare --resolutions ...` with it")
    return np.load(cache_file(cache_dir, resolution), mmap_mode="r")
