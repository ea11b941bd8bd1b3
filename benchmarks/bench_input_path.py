"""Images/s per core of the input path: raw memory-map reads, the batch path, and the old per-sample path.

    .venv/bin/python benchmarks/bench_input_path.py [--resolutions 32 128 224 512] [--batch-size 64]
        [--seconds 0.5] [--repeats 3]

One process, one thread, ``num_workers=0``, a synthetic uint8 cache in a temporary folder (read once
before timing, so every path reads from a warm page cache), of at least 64 MB: larger than the CPU's caches,
as a real dataset's cache is (NIH ChestX-ray14 at 32 px: 115 MB); a smaller one flatters the raw read.
Batches of random rows (a fresh permutation each epoch). Each path runs for at least ``--seconds`` per
repeat after one warm-up batch; repeats are interleaved across paths and the best counts (the machine is shared).
Columns:

- raw: ``np.take(cache, rows, axis=0)``, a bare uint8 batch read (the ceiling: the fastest of ``cache[rows]``,
  ``cache[np.sort(rows)]`` and ``np.take`` measured here);
- loader: the template's training loader, ``DataLoader(CacheBatchDataset(with_ids=False),
  batch_sampler=SubsampleSampler(batch_size=B), collate_fn=collate_batch)``: the read (rows in the batch's
  order), labels and the DataLoader's own work; uint8 out. The target is loader/raw >= 0.5;
- sorted: loader with ``sort_reads=True`` (rows read in ascending order, then put back in the batch's order);
- +norm: loader, then ``DevicePreprocess()`` on the CPU (uint8 -> float32, per-image z-score);
- +aug: loader, then ``DevicePreprocess(augment_prob=1)`` on the CPU (also a bilinear affine per image);
- old, old+aug: the template's former per-sample MONAI path (a cache row read per item, as its ``LoadCacheRowd``
  did, + ``NormalizeIntensityd`` [+ ``RandAffined(prob=1)``] + ``EnsureTyped``, MONAI ``DataLoader``), float32 out.

On a GPU, +norm and +aug run on the device instead; here they show what one CPU core would cost.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {32: 64000, 128: 4000, 224: 3000, 512: 600}  # images in the synthetic cache per resolution (>= 64 MB)


def rate(batches, seconds: float) -> float:
    """Images/s of an endless iterator of batches (their first dimension), after one warm-up batch."""
    next(batches)
    images, start = 0, time.perf_counter()
    while True:
        images += len(next(batches))
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and images:
            return images / elapsed


def endless(make_loader):
    while True:
        yield from make_loader()


def paths(cache_file: str, n: int, batch: int):
    """name -> a function making a fresh endless iterator of batches (tensors or arrays)."""
    import torch
    from monai.data import DataLoader as MonaiDataLoader
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureTyped, Lambdad, NormalizeIntensityd, RandAffined
    from torch.utils.data import DataLoader

    from monai_cxr.cell.batches import CacheBatchDataset, DevicePreprocess, collate_batch
    from monai_cxr.cell.sampling import SubsampleSampler

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    data = [{"image": i, "label": [int(labels[i])], "image_id": f"i{i}", "patient_id": f"p{i // 2}"} for i in range(n)]
    cache = np.asarray(np.load(cache_file, mmap_mode="r"))  # a plain view of the map, as the dataset reads it

    def raw():
        def gen():
            while True:
                order = rng.permutation(n)
                for b in range(n // batch):
                    yield np.take(cache, order[b * batch : (b + 1) * batch], axis=0)

        return gen()

    def loader_of(dataset):
        sampler = SubsampleSampler(labels, num_samples=0, seed=0, batch_size=batch)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch)

    loader = loader_of(CacheBatchDataset(cache_file, data, with_ids=False))
    sorted_loader = loader_of(CacheBatchDataset(cache_file, data, sort_reads=True, with_ids=False))
    plain, augment = DevicePreprocess(), DevicePreprocess(augment_prob=1.0, seed=0)
    cpu = torch.device("cpu")

    def old(aug: bool):
        load = Lambdad("image", lambda row: cache[int(row)][None].astype(np.float32))  # the former LoadCacheRowd
        steps = [load, NormalizeIntensityd("image")]
        if aug:
            steps.append(RandAffined("image", prob=1.0, rotate_range=0.09, scale_range=0.05, padding_mode="zeros"))
        steps.append(EnsureTyped(["image", "label"], dtype=torch.float32, track_meta=False))
        old_loader = MonaiDataLoader(
            Dataset(data, Compose(steps)), sampler=SubsampleSampler(labels, 0, seed=0), batch_size=batch, drop_last=True
        )
        return lambda: (b["image"] for b in endless(lambda: old_loader))

    return {
        "raw": raw,
        "loader": lambda: (b["image"] for b in endless(lambda: loader)),
        "sorted": lambda: (b["image"] for b in endless(lambda: sorted_loader)),
        "+norm": lambda: (plain(b, cpu)[0] for b in endless(lambda: loader)),
        "+aug": lambda: (augment(b, cpu)[0] for b in endless(lambda: loader)),
        "old": old(False),
        "old+aug": old(True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=0.5, help="minimum timed seconds per path and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(
        f"images/s, one core (torch threads {torch.get_num_threads()}, num_workers=0), batch {args.batch_size}, "
        f"best of {args.repeats} interleaved repeats of >= {args.seconds} s"
    )
    header = [
        "px",
        "raw",
        "loader",
        "sorted",
        "+norm",
        "+aug",
        "old",
        "old+aug",
        "loader/raw",
        "+norm/raw",
        "+norm/old",
        "+aug/old+aug",
    ]
    print(" ".join(f"{h:>12}" for h in header))
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.resolutions:
            n = SIZES.get(res, max(256, int(3000 * (224 / res) ** 2)))
            cache_file = os.path.join(tmp, f"r{res}.npy")
            np.save(cache_file, np.random.default_rng(res).integers(0, 256, (n, res, res), dtype=np.uint8))
            np.load(cache_file, mmap_mode="r").sum(dtype=np.int64)  # warm the page cache
            makers = paths(cache_file, n, args.batch_size)
            best = dict.fromkeys(makers, 0.0)
            for _ in range(args.repeats):
                for name, make in makers.items():
                    best[name] = max(best[name], rate(make(), args.seconds))
            ratios = [
                best["loader"] / best["raw"],
                best["+norm"] / best["raw"],
                best["+norm"] / best["old"],
                best["+aug"] / best["old+aug"],
            ]
            print(f"{res:>12}" + "".join(f"{best[k]:>13,.0f}" for k in makers) + "".join(f"{r:>13.3f}" for r in ratios))
            os.remove(cache_file)
    print(
        "loader: read + labels + DataLoader (the template's training loader), uint8 out "
        "(target loader/raw >= 0.5); +norm/+aug add the device preprocessing, here on the CPU"
    )


if __name__ == "__main__":
    main()
