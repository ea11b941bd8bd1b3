"""The resize cache: cost of nine resolutions vs one, and read speed vs ResNet34 training.

1. Builds the cache for the paper's nine resolutions and for one (224 px) from the same
   1024 px phantom PNGs (what NIH ships), one worker, and prints the time ratio (target
   <= 2, as bench_resize.py's: the PNG decode is shared, each resolution adds one exact area
   resize of the full image). After one untimed build (imports, page cache), the two builds
   alternate ``--repeats`` times into fresh folders and the best of each counts.
2. For each resolution, reads random class-balanced batches from the memory-mapped cache
   as float tensors and compares that rate with how fast a ResNet34 (standard ImageNet
   stem) trains on such batches on this machine (target >= 10x at every resolution).

    python benchmarks/bench_cache.py [--images 256] [--repeats 3] [--batch 16]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_cxr.data.cache import build_cache, open_cache
from monai_cxr.data.phantom import synthesize
from monai_cxr.data.sources.nih import read_nih

PAPER = [32, 64, 128, 224, 256, 320, 448, 512, 600]


def timed_build(index, cache_dir, resolutions):
    t0 = time.perf_counter()
    build_cache(index, cache_dir, resolutions, workers=1, progress=False)
    return time.perf_counter() - t0


def read_rate(array, batch, seconds=1.0):
    """Images/s of random-row batches turned into normalised float tensors."""
    import torch

    rng = np.random.default_rng(0)
    n, count, t0 = len(array), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rows = np.sort(rng.choice(n, size=min(batch, n), replace=False))
        x = torch.from_numpy(np.ascontiguousarray(array[rows])).float().div_(255.0).unsqueeze(1)
        x = (x - x.mean()) / (x.std() + 1e-6)
        count += len(rows)
    return count / (time.perf_counter() - t0)


def train_rate(resolution, batch, steps=2):
    """Images/s of ResNet34 forward + backward + Adam step at this resolution."""
    import torch
    from monai.networks.nets import resnet34

    net = resnet34(spatial_dims=2, n_input_channels=1, num_classes=1, conv1_t_size=7, conv1_t_stride=2)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.randn(batch, 1, resolution, resolution), torch.ones(batch, 1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="phantom images to cache")
    parser.add_argument("--repeats", type=int, default=3, help="timed builds of each kind, alternating")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=1024, help="source image size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize(tmp / "nih", patients=max(1, args.images // 2), size=args.size, seed=0)
        index = read_nih(tmp / "nih").iloc[: args.images]
        timed_build(index.iloc[:8], tmp / "warm", PAPER)
        one, nine = float("inf"), float("inf")
        for repeat in range(args.repeats):
            one = min(one, timed_build(index, tmp / f"one{repeat}", [224]))
            nine = min(
                nine, timed_build(index, tmp / ("nine" if repeat == args.repeats - 1 else f"nine{repeat}"), PAPER)
            )
        print(
            f"cache build, {len(index)} images of {args.size} px, 1 worker, best of {args.repeats}: "
            f"one resolution (224) {one:.2f} s, nine {nine:.2f} s, ratio {nine / one:.2f} (target <= 2)"
        )
        print(f"{'res':>5} {'read img/s':>11} {'train img/s':>12} {'ratio':>7}")
        for r in PAPER:
            read = read_rate(open_cache(tmp / "nine", r), args.batch)
            train = train_rate(r, args.batch)
            print(f"{r:>5} {read:>11.0f} {train:>12.1f} {read / train:>7.0f}x")


if __name__ == "__main__":
    main()
