"""ChestMNIST cache: build rate and peak memory when the arrays are streamed from the .npz.

Writes ChestMNIST-shaped files (28, 64 and 224 px, compressed as MedMNIST ships them; random
pixels, the released split proportions scaled to --images), then builds the cache at
28, 64 (copied from their files), 32, 128 (area-resized from 224) and 224 (copied) in a
child process, and prints images/s and the peak heap memory (tracemalloc, a second build)
next to the size of the 224 px arrays. Streaming should keep the heap well below that size
(the full release's 224 px file unpacks to about 5.6 GB).

    python benchmarks/bench_chestmnist.py [--images 6000]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, time, tracemalloc
from monai_cxr.data.prepare import prepare
t0 = time.perf_counter()
prepare("chestmnist", sys.argv[1], sys.argv[2], [28, 32, 64, 128, 224], echo=lambda m: None, progress=False)
seconds = time.perf_counter() - t0
tracemalloc.start()
prepare("chestmnist", sys.argv[1], sys.argv[3], [28, 32, 64, 128, 224], echo=lambda m: None, progress=False)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, tracemalloc.get_traced_memory()[1] / 2**20)
"""


def write_files(folder: Path, n: int) -> None:
    sizes = {"train": round(n * 0.7), "val": round(n * 0.1)}
    sizes["test"] = n - sizes["train"] - sizes["val"]
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 2, (k, 14), dtype=np.uint8) for s, k in sizes.items()}
    for side, name in ((28, "chestmnist.npz"), (64, "chestmnist_64.npz"), (224, "chestmnist_224.npz")):
        arrays = {}
        for split, k in sizes.items():
            arrays[f"{split}_images"] = rng.integers(0, 256, (k, side, side), dtype=np.uint8)
            arrays[f"{split}_labels"] = labels[split]
        np.savez_compressed(folder / name, **arrays)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "mn").mkdir()
        t0 = time.perf_counter()
        write_files(tmp / "mn", args.images)
        print(f"wrote {args.images} images at 28/64/224 px in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp / "mn"), str(tmp / "s"), str(tmp / "s2")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        seconds, rss_mb, heap_mb = map(float, out)
        full_mb = args.images * 224 * 224 / 2**20
        print(f"prepare + cache 28,32,64,128,224 px: {seconds:.1f} s, {args.images / seconds:.0f} images/s")
        print(
            f"the 224 px arrays are {full_mb:.0f} MB; peak heap (tracemalloc) {heap_mb:.0f} MB; "
            f"peak RSS {rss_mb:.0f} MB (includes the written cache's mapped pages)"
        )


if __name__ == "__main__":
    main()
