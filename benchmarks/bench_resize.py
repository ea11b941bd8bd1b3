"""Exact area resizing: cost of the study's nine sizes vs one, and how far PIL's BOX filter is from it.

Per 1024 px phantom PNG (the phantom's texture decodes in about the time an NIH PNG does),
times what the cache does per image -- decode, make square, resize -- for the nine study
sizes and for 224 px alone, with :func:`~monai_cxr.data.resize.area_resize` (the cache) and
with PIL's BOX filter (the cache before FORMAT 2). Prints the nine-vs-one ratio of each
(target for the exact path: <= 2) and, per size, the largest and mean |exact - PIL BOX|.
Each variant runs in turn on each image, ``--rounds`` times, and the fastest run counts, so
other work on a shared machine moves the figures less. One thread.

    python benchmarks/bench_resize.py [--images 8] [--rounds 7] [--size 1024]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from monai_cxr.data.images import make_square, read_image, resized
from monai_cxr.data.phantom import encode_png, plan, render_image

PAPER = [32, 64, 128, 224, 256, 320, 448, 512, 600]


def decode(path):
    return np.asarray(make_square(read_image(path)))


def pil_box(path, sizes):
    img = make_square(read_image(path))
    return {r: np.asarray(img.resize((r, r), Image.BOX)) for r in sizes}


VARIANTS = {
    "decode only": decode,
    "exact, nine sizes": lambda p: resized(p, PAPER),
    "exact, 224 only": lambda p: resized(p, [224]),
    "PIL BOX, nine sizes": lambda p: pil_box(p, PAPER),
    "PIL BOX, 224 only": lambda p: pil_box(p, [224]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024, help="source image size (px)")
    args = parser.parse_args()
    sizes = [r for r in PAPER if r <= args.size]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for spec in plan(args.images, seed=0)[: args.images]:
            pixels, _ = render_image(spec, args.size, seed=0)
            paths.append(str(Path(tmp) / spec.image_id))
            Path(paths[-1]).write_bytes(encode_png(pixels))
        for fn in VARIANTS.values():  # warm up: imports, the resize plan
            fn(paths[0])
        best = {name: np.full(len(paths), np.inf) for name in VARIANTS}
        for _ in range(args.rounds):
            for i, path in enumerate(paths):
                for name, fn in VARIANTS.items():
                    t0 = time.perf_counter()
                    fn(path)
                    best[name][i] = min(best[name][i], time.perf_counter() - t0)
        ms = {name: 1e3 * t.mean() for name, t in best.items()}
        diffs = {r: [] for r in sizes}
        for path in paths:
            exact, box = resized(path, sizes), pil_box(path, sizes)
            for r in sizes:
                diffs[r].append(np.abs(exact[r].astype(int) - box[r]))

    print(f"{len(paths)} phantom PNGs of {args.size} px, fastest of {args.rounds} rounds, ms per image:")
    for name, value in ms.items():
        print(f"  {name:<22} {value:7.2f}")
    exact, box = ms["exact, nine sizes"] / ms["exact, 224 only"], ms["PIL BOX, nine sizes"] / ms["PIL BOX, 224 only"]
    print(f"nine sizes vs 224 alone, decode included: exact {exact:.2f}x (target <= 2), PIL BOX {box:.2f}x")
    print(
        f"resizing alone (minus decode), nine sizes: exact {ms['exact, nine sizes'] - ms['decode only']:.2f} ms, "
        f"PIL BOX {ms['PIL BOX, nine sizes'] - ms['decode only']:.2f} ms"
    )
    print("|exact - PIL BOX| in grey levels, per size:  " + "  ".join(f"{r}" for r in sizes))
    print("  max   " + "  ".join(f"{max(int(d.max()) for d in diffs[r]):>{len(str(r))}}" for r in sizes))
    print("  mean  " + "  ".join(f"{np.mean([d.mean() for d in diffs[r]]):.2f}" for r in sizes))


if __name__ == "__main__":
    main()
