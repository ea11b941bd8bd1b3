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
``manifest.json``, so a killed build resumes where it stopped. Before it touches anything it
checks the free space (N R^2 bytes per missing resolution; the full NIH cache is about 119 GB),
and it allocates each array's blocks (``posix_fallocate``) before memory-mapping it: a disk that
fills up is then one clear error at the start, never a SIGBUS in the middle of a write. The manifest also holds a
fingerprint of the inputs (ids, paths, file sizes and times, square policy): when it no
longer matches, the cache is rebuilt; resolutions already complete are not redone.

A rebuild never puts a usable cache at risk: when ``cache/`` holds complete resolutions of other
inputs, the new cache is built beside it in ``cache.new/`` (same layout, its own manifest naming
the inputs it is for) and swapped in only when complete (``cache/`` renamed to ``cache.old/``,
``cache.new/`` to ``cache/``, then ``cache.old/`` deleted; a kill between the renames is finished
by the next build). Until then ``cache/`` keeps its bytes, so a failed or killed rebuild leaves
the study usable with its old data, and a rerun resumes the staged build; a ``cache.new/`` of
other inputs is discarded. Only when the disk has no room for both does the rebuild delete the
old cache first and build in place, saying so in one line. Adding resolutions to a cache of the
same inputs, or resuming a build of them, is done in place. Readers (:func:`open_cache`) only
ever look at ``cache/``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from monai_cxr.data.images import FileImages
from monai_cxr.errors import CxrError
from monai_cxr.fileio import WriteError, write_json
from monai_cxr.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = 2  # 2: exact area means (area_resize) instead of PIL's BOX filter
SQUARE_POLICIES = ("pad", "crop")
CHUNK = 64


def cache_file(cache_dir: str | os.PathLike, resolution: int) -> Path:
    return Path(cache_dir) / f"r{int(resolution)}.npy"


def fingerprint(index: pd.DataFrame, policy: str, images=None) -> str:
    """Identify the cache's inputs: ids, the source's stamps (paths, sizes, times), policy.

    ``images`` is the image source of the index rows (default: the index's image files).
    """
    images = images if images is not None else FileImages(index["path"].astype(str), policy)
    digest = hashlib.sha1(f"{FORMAT}|{policy}|{len(index)}".encode())
    for image_id, stamp in zip(index["image_id"], images.stamps()):
        digest.update(f"{image_id}|{stamp}\n".encode())
    return digest.hexdigest()


def _build_chunk(args) -> int:
    """Worker: decode rows [start, stop) once and write them into every resolution's array.

    No ``flush`` (msync): what is written through a shared map is in the page cache and outlives the process
    (a killed build resumes from the manifest, which is not fsynced either); forcing it to disk chunk by chunk
    cost a quarter of a nine-resolution build.
    """
    chunk, start, stop, part, resolutions, cache_dir = args
    for r, rows in part.read(resolutions).items():
        np.load(cache_file(cache_dir, r), mmap_mode="r+")[start:stop] = rows
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


def _size(n: int, resolution: int) -> int:
    """Bytes of the ``.npy`` file of ``n`` images at ``resolution`` (its header rounds up to 128 bytes)."""
    return 128 + n * resolution * resolution


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def _allocated(path: Path) -> int:
    """Bytes of disk a file holds now (0 if absent): what deleting it gives back."""
    try:
        return path.stat().st_blocks * 512
    except (FileNotFoundError, AttributeError):
        return 0


def _free_bytes(folder: Path) -> int:
    """Free bytes of the file system that holds ``folder`` (or would: its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_space(cache_dir: Path, n: int, create: list[int], reclaim: list[Path]) -> None:
    """One line unless the arrays of ``create`` fit: free space plus what deleting ``reclaim`` frees."""
    need = sum(_size(n, r) for r in create)
    if not need:
        return
    available = _free_bytes(cache_dir) + sum(_allocated(p) for p in reclaim)
    if need > available:
        raise CxrError(
            f"not enough free space for the resize cache in {cache_dir}: {', '.join(map(str, create))} px "
            f"for {n} images need {_gb(need)}, {_gb(available)} available; free space, cache fewer "
            f"--resolutions, or use a --study-dir on a larger disk"
        )


def allocate(path: Path, n: int, resolution: int) -> None:
    """Create ``path`` as a zero uint8 .npy array (n, R, R) whose blocks are all on disk.

    A memory map of a sparse file dies of SIGBUS when the disk fills up under a write; with
    its blocks allocated up front, a full disk is an error here instead (a CxrError, the
    file removed), and writes through the map cannot run out of space.
    """
    try:
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, resolution, resolution)).flush()
        if hasattr(os, "posix_fallocate"):  # not on macOS; there the file stays sparse
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CxrError(
                f"disk full while allocating {path} ({_gb(_size(n, resolution))}): {exc.strerror}; "
                f"free space and rerun prepare (finished resolutions are kept)"
            ) from None
        raise WriteError(exc.errno, exc.strerror or str(exc), str(path)) from None


class _Plan(NamedTuple):
    """What building ``todo`` into ``folder`` takes, from the manifest found there."""

    folder: Path
    manifest: dict
    rebuild: bool  # the folder holds nothing of these inputs: start afresh
    todo: list[int]  # the resolutions not complete there
    building: dict  # the unfinished build recorded there ({} if none)
    resume: bool  # that build is of ``todo`` and its arrays are there: go on with it

    def reclaim(self) -> list[Path]:
        """The arrays a fresh start deletes: all of them on a rebuild, else those of ``todo``."""
        return sorted(self.folder.glob("r*.npy")) if self.rebuild else [cache_file(self.folder, r) for r in self.todo]


def _plan(folder: Path, fp: str, resolutions: list[int]) -> _Plan:
    manifest = _load_manifest(folder)
    rebuild = manifest.get("format") != FORMAT or manifest.get("fingerprint") != fp
    complete = [] if rebuild else manifest.get("complete", [])
    todo = [r for r in resolutions if r not in complete]
    building = {} if rebuild else (manifest.get("building") or {})
    resume = (
        building.get("resolutions") == todo
        and building.get("chunk") == CHUNK
        and all(cache_file(folder, r).is_file() for r in todo)
    )
    return _Plan(folder, manifest, rebuild, todo, building, resume)


def _beside(cache_dir: Path, suffix: str) -> Path:
    return cache_dir.with_name(f"{cache_dir.name}.{suffix}")


def build_cache(
    index: pd.DataFrame,
    cache_dir: str | os.PathLike,
    resolutions,
    square: str = "pad",
    workers: int = 0,
    progress: bool = True,
    images=None,
) -> dict:
    """Build (or finish, or reuse) the cache for ``index`` at ``resolutions``; return the manifest.

    ``images`` is the image source of the index rows (default: the index's image files).
    Nothing is changed before the free space is known to suffice. A cache of other inputs that
    holds complete resolutions is replaced only by a complete new one, built beside it in
    ``cache_dir.new`` (in place only when the disk has no room for both).
    """
    resolutions = check_settings(resolutions, square)
    cache_dir = Path(cache_dir)
    staging, old = _beside(cache_dir, "new"), _beside(cache_dir, "old")
    n = len(index)
    images = images if images is not None else FileImages(index["path"].astype(str), square)
    if len(images) != n:
        raise CxrError(f"the image source has {len(images)} rows but the index {n}")
    fp = fingerprint(index, square, images)
    if old.exists():  # a swap was killed between its renames: finish it
        if not cache_dir.exists():
            staging.rename(cache_dir)
        shutil.rmtree(old)
    plan = _plan(cache_dir, fp, resolutions)
    staged = plan.rebuild and bool(plan.manifest.get("complete"))  # a usable cache to keep until the new one is done
    if staged:
        plan = _plan(staging, fp, resolutions)
    if plan.todo:
        images.check(plan.todo)  # fail fast on a too-small or unreadable source, before anything changes
    discard = [] if staged or not staging.exists() else [staging]  # a staged build no longer wanted
    no_room = False
    if not plan.resume:
        try:
            check_space(plan.folder, n, plan.todo, plan.reclaim() + [a for d in discard for a in d.glob("r*.npy")])
        except CxrError:
            if not staged:
                raise
            no_room = True
    if no_room:  # for both caches: rebuild in place, the old arrays deleted first (the usual line if still short)
        plan = _plan(cache_dir, fp, resolutions)
        check_space(cache_dir, n, plan.todo, plan.reclaim() + sorted(staging.glob("r*.npy")))
        staged, discard = False, [staging]
        log.info(
            f"cache: inputs changed, and the disk has no room for a new cache beside the old one: "
            f"discarding the old cache in {cache_dir} first and rebuilding it in place"
        )
    for folder in discard:
        if folder.exists():
            shutil.rmtree(folder)
    if staged:
        log.info(f"cache: inputs changed, rebuilding in {staging}; {cache_dir} stays as it is until that is complete")
    elif plan.rebuild and plan.manifest and not no_room:
        log.info("cache: inputs changed, rebuilding")
    folder, manifest = plan.folder, plan.manifest
    folder.mkdir(parents=True, exist_ok=True)
    if plan.rebuild:
        for array in folder.glob("r*.npy"):
            array.unlink()
        manifest = {
            "format": FORMAT,
            "fingerprint": fp,
            "square": square,
            "n_images": n,
            "complete": [],
            "building": None,
        }
        write_json(folder / "manifest.json", manifest)  # never lists deleted arrays
    if plan.todo:
        _fill(folder, manifest, images, plan, workers, progress)
    if staged:  # the new cache is complete: swap it in
        cache_dir.rename(old)
        staging.rename(cache_dir)
        shutil.rmtree(old)
    if plan.todo:
        log.info(f"cache: built {', '.join(map(str, plan.todo))} px for {n} images in {cache_dir}")
    else:
        log.info(f"cache: {', '.join(map(str, resolutions))} px up to date ({n} images)")
    return manifest


def _fill(folder: Path, manifest: dict, images, plan: _Plan, workers: int, progress: bool) -> None:
    """Build ``plan.todo`` into ``folder`` chunk by chunk, recording finished chunks in ``manifest``."""
    n, todo = len(images), plan.todo
    origins = {str(r): images.origin(r) for r in todo}
    if not isinstance(images, FileImages):  # say where each resolution comes from
        for r in todo:
            log.info(f"cache: {r} px {origins[str(r)]}")
    building = plan.building
    if not plan.resume:
        manifest["building"] = None  # the arrays below are new: no chunk of them is built
        write_json(folder / "manifest.json", manifest)
        made = []
        try:
            for r in todo:
                allocate(cache_file(folder, r), n, r)
                made.append(r)
        except BaseException:
            for r in made:  # all or none: a rerun starts the allocation afresh
                cache_file(folder, r).unlink(missing_ok=True)
            raise
        building = {"resolutions": todo, "chunk": CHUNK, "done": []}
    manifest["building"] = building
    done = set(building["done"])
    n_chunks = (n + CHUNK - 1) // CHUNK
    jobs = [
        (c, c * CHUNK, min(n, (c + 1) * CHUNK), images.take(c * CHUNK, min(n, (c + 1) * CHUNK)), todo, str(folder))
        for c in range(n_chunks)
        if c not in done
    ]
    if done:
        log.info(f"cache: resuming, {len(done)} of {n_chunks} chunks already built")
    workers = min(workers or os.cpu_count() or 1, max(1, len(jobs))) if images.parallel else 1

    last = [0.0]  # when the manifest was last written

    def record(final: bool = False):
        if final or time.monotonic() - last[0] > 0.5:
            building["done"] = sorted(done)
            write_json(folder / "manifest.json", manifest)
            last[0] = time.monotonic()

    bar = progress_bar(
        total=n,
        initial=min(n, len(done) * CHUNK),
        unit="img",
        enabled=progress,
        desc=f"cache {'/'.join(map(str, todo))} px",
        leave=False,
    )
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
    write_json(folder / "manifest.json", manifest)


def discard_if_stale(index: pd.DataFrame, cache_dir: str | os.PathLike, square: str = "pad", images=None) -> bool:
    """Remove a cache built from other inputs than ``index`` (``prepare --no-cache`` after the images or the
    square policy changed): left in place, its rows would no longer be index.csv's rows. True if removed."""
    cache_dir = Path(cache_dir)
    arrays = sorted(cache_dir.glob("r*.npy"))
    built_from = cache_fingerprint(cache_dir)
    if (built_from is None and not arrays) or built_from == fingerprint(index, square, images):
        return False
    (cache_dir / "manifest.json").unlink(missing_ok=True)  # first: no manifest lists an array being deleted
    for array in arrays:
        array.unlink(missing_ok=True)
    log.info(f"cache: removed the resize cache of other inputs from {cache_dir}; prepare without --no-cache builds it")
    return True


def cache_fingerprint(cache_dir: str | os.PathLike) -> str | None:
    """What the cache in ``cache_dir`` was built from (its manifest's fingerprint; an older format's counts as
    other inputs), or None when there is no cache."""
    manifest = _load_manifest(Path(cache_dir))
    if not manifest:
        return None
    return manifest.get("fingerprint") if manifest.get("format") == FORMAT else f"format {manifest.get('format')}"


def complete_resolutions(cache_dir: str | os.PathLike) -> list[int]:
    """The resolutions the cache holds in full (per its manifest; none without one)."""
    return sorted(int(r) for r in _load_manifest(Path(cache_dir)).get("complete", []))


def open_cache(cache_dir: str | os.PathLike, resolution: int) -> np.ndarray:
    """The cached images at ``resolution`` as a read-only memory map (N, R, R)."""
    complete = complete_resolutions(cache_dir)
    if int(resolution) not in complete:
        have = ", ".join(map(str, complete)) or "none"
        raise CxrError(
            f"resolution {resolution} is not in the cache {cache_dir} (complete: {have}); "
            f"run `monai-cxr prepare --resolutions ...` with it"
        )
    return np.load(cache_file(cache_dir, resolution), mmap_mode="r")
