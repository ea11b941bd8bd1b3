"""Phantom speed: images per second per core, drawing plus PNG encoding and writing.

    .venv/bin/python benchmarks/bench_phantom.py [--size 512] [--patients 200]

Runs ``synthesize`` in one process (workers=1) into a temporary folder and divides the
images by the CPU time the process used (and, for comparison, by wall-clock time, which
other processes on a shared machine inflate); prints the drawing and PNG shares too. Goal: >= 100 images/s per core
at 512 px.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from monai_cxr.data.phantom import (
    _one_blas_thread,
    encode_png,
    plan,
    render_image,
    synthesize,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--patients", type=int, default=200)
    args = parser.parse_args()

    render_image(plan(1)[0], args.size)  # warm caches (coordinate grids, imports)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        synthesize(tmp, patients=args.patients, size=args.size, seed=0, workers=1)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    specs = plan(args.patients, seed=0)
    n = len(specs)
    with _one_blas_thread():  # as synthesize does
        t0 = time.process_time()
        images = [render_image(s, args.size)[0] for s in specs[:200]]
        draw = (time.process_time() - t0) / len(images)
    t0 = time.process_time()
    for img in images:
        encode_png(img)
    png = (time.process_time() - t0) / len(images)
    print(f"size {args.size} px, {n} images of {args.patients} patients, 1 process")
    print(
        f"synthesize: {n / cpu:.1f} images/s per core-second of CPU time ({1000 * cpu / n:.2f} ms/image); "
        f"{n / total:.1f} images/s wall clock (lower when other processes share the core)"
    )
    print(f"  of which drawing {1000 * draw:.2f} ms/image, PNG encoding {1000 * png:.2f} ms/image (CPU time)")


if __name__ == "__main__":
    main()
