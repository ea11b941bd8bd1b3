"""Training throughput of a generated bundle against a bare PyTorch loop (target ratio >= 0.95).

    .venv/bin/python benchmarks/bench_bundle_throughput.py [--resolution 64] [--batch-size 32]
        [--epochs 2] [--subsample 1024] [--arch resnet34] [--threads 1] [--repeats 2]

Both train the same network (``network_def`` of the arch), on the same resize cache (a
hand-made study of random images), with the same batch size, the same subsample epochs
(``SubsampleSampler``), AdamW (fused) and BCE with logits. The bundle runs under the stock
runner (``python -m monai.bundle run``) and its images/s come from its ``run.json`` (the
training loop only, as the bare loop); the bare loop reads whole batches from the memory map
and normalises them in NumPy. Each is timed per epoch, validation excluded, and the best
epoch of each counts (steady state; on a shared machine the best is the least disturbed).
Prints both rates and bundle / bare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def bare_loop(cache_file, labels, args) -> list[float]:
    """Images/s of each epoch of a plain PyTorch training loop."""
    import torch
    from monai.bundle import ConfigParser

    from monai_cxr.cell.sampling import SubsampleSampler
    from monai_cxr.grid.networks import network_def

    torch.manual_seed(0)
    cache = np.load(cache_file, mmap_mode="r")
    net = ConfigParser({"n": network_def(args.arch)}).get_parsed_content("n").train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sampler = SubsampleSampler(labels, args.subsample, seed=0)
    rates = []
    for _ in range(args.epochs):
        images = 0
        order = np.fromiter(iter(sampler), dtype=np.int64)
        start = time.perf_counter()
        for b in range(len(order) // args.batch_size):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            x = cache[np.sort(idx)].astype(np.float32)  # memmap reads want sorted rows
            x -= x.mean(axis=(1, 2), keepdims=True)
            x /= x.std(axis=(1, 2), keepdims=True) + 1e-8
            y = torch.as_tensor(labels[np.sort(idx)], dtype=torch.float32)[:, None]
            opt.zero_grad()
            loss = loss_fn(net(torch.from_numpy(x)[:, None]), y)
            loss.backward()
            opt.step()
            images += len(idx)
        rates.append(images / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subsample", type=int, default=1024)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each (shared machines)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from conftest import make_hand_study

    from monai_cxr.grid.generate import GridSettings, generate

    with tempfile.TemporaryDirectory() as tmp:
        study = make_hand_study(Path(tmp) / "study", {"Mass": None}, n_patients=256,
                                resolutions=(args.resolution,))
        (cell,) = generate(study, GridSettings(labels=["Mass"], resolutions=[args.resolution], archs=[args.arch],
                                               epochs=args.epochs, batch_size=args.batch_size,
                                               subsample=args.subsample), echo=lambda *a: None)
        datalist = json.loads((cell / "datalist.json").read_text())
        labels = np.zeros(len(np.load(cell.parents[1] / "data/cache" / f"r{args.resolution}.npy", mmap_mode="r")))
        for item in datalist["training"]:
            labels[item["image"]] = item["label"][0]
        train_rows = np.array([item["image"] for item in datalist["training"]])

        # the bare loop on the training rows only, as the bundle
        cache_file = cell.parents[1] / "data/cache" / f"r{args.resolution}.npy"
        sub = Path(tmp) / "train.npy"
        np.save(sub, np.load(cache_file)[train_rows])
        bundle_rates, bare_rates = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same background load
            subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                            str(cell / "configs/train.json")], check=True, capture_output=True)
            bundle_rates += json.loads((cell / "run.json").read_text())["epoch_images_per_s"]
            bare_rates += bare_loop(sub, labels[train_rows], args)
        # steady state: the best epoch of each (the first epoch of both carries the warm-up)
        bundle, bare = max(bundle_rates), max(bare_rates)

    print(f"{args.arch} {args.resolution} px, batch {args.batch_size}, {args.epochs} x {args.subsample} images, "
          f"{args.threads} thread(s), best epoch of {args.repeats} runs")
    print(f"bundle (python -m monai.bundle run): {bundle:8.1f} images/s")
    print(f"bare PyTorch loop:                   {bare:8.1f} images/s")
    print(f"ratio bundle / bare:                 {bundle / bare:8.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
