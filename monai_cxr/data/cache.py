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

Where the pixels come from is an *image source* (:class:`~monai_cxr.data.images.FileImages`: one file per
index row; ChestMNIST's :class:`~monai_cxr.data.sources.chestmnist.NpzImages`: rows of ``.npz``
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
import logging
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.images import FileImages
from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_json
from monai_cxr.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = 2  # 2: exact area means (area_resize) instead of PIL's BOX filter
SQUARE_POLICIES = ("pad", "crop")
CHUNK = 64


def cache_file(cache_dir: str | os.PathLike, resolution: int) -> Path:
    return Path(cache_dir) / f"r{int(resolution)}.npy"


def fingerprint(index: pd.DataFrame, policy: str, images) -> str:
    """Identify the cache's inputs: ids, the source's stamps (paths, sizes, times), policy."""
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
                workers: int = 0, progress: bool = True, images=None) -> dict:
    """Build (or finish, or reuse) the cache for ``index`` at ``resolutions``; return the manifest.

    ``images`` is the image source of the index rows (default: the index's image files).
    """
    resolutions = check_settings(resolutions, square)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(index)
    images = images if images is not None else FileImages(index["path"].astype(str), square)
    if len(images) != n:
        raise CxrError(f"the image source has {len(images)} rows but the index {n}")
    fp = fingerprint(index, square, images)
    manifest = _load_manifest(cache_dir)
    if manifest.get("format") != FORMAT or manifest.get("fingerprint") != fp:
        if manifest:
            log.info("cache: inputs changed, rebuilding")
        for old in cache_dir.glob("r*.npy"):
            old.unlink()
        manifest = {"format": FORMAT, "fingerprint": fp, "square": square, "n_images": n,
                    "complete": [], "building": None}
        write_json(cache_dir / "manifest.json", manifest)  # never lists deleted arrays
    todo = [r for r in resolutions if r not in manifest["complete"]]
    if not todo:
        log.info(f"cache: {', '.join(map(str, resolutions))} px up to date ({n} images)")
        return manifest

    images.check(todo)  # fail fast on a too-small or unreadable source
    origins = {str(r): images.origin(r) for r in todo}
    if not isinstance(images, FileImages):  # say where each resolution comes from
        for r in todo:
            log.info(f"cache: {r} px {origins[str(r)]}")
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
        log.info(f"cache: resuming, {len(done)} of {n_chunks} chunks already built")
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs))) if images.parallel else 1

    def record(final: bool = False, _last=[0.0]):
        if final or time.monotonic() - _last[0] > 0.5:
            building["done"] = sorted(done)
            write_json(cache_dir / "manifest.json", manifest)
            _last[0] = time.monotonic()

    bar = progress_bar(total=n, initial=min(n, len(done) * CHUNK), unit="img", enabled=progress,
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
    log.info(f"cache: built {', '.join(map(str, todo))} px for {n} images in {cache_dir}")
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
