"""Training throughput of a generated bundle under the stock runner against a bare PyTorch loop (target >= 0.97).

    .venv/bin/python benchmarks/bench_bundle_throughput.py [--resolution 64] [--batch-size 32] [--epochs 3]
        [--subsample 512] [--augment-prob 0.5] [--arch resnet34] [--threads 1] [--repeats 3]

Both train the same network (``network_def`` of the arch) on the same data: a hand-made study of random
images (``tests/conftest.py: make_hand_study``), its resize cache and the cell's training rows, subsample
epochs drawn by ``SubsampleSampler``, the same batch size, AdamW (fused), BCE with logits, and the same
batch preprocessing with augmentation on (``DevicePreprocess(augment_prob)``: uint8 -> z-score -> random
affine, in batch).

- bundle: the generated cell run as ``monai-cxr run`` runs it (``python -m monai.bundle run`` in the cell
  folder, ``OMP_NUM_THREADS=--threads``); its rate per epoch comes from ``run.json["epoch_images_per_s"]``
  (the training loop only: no process start-up, no validation, no scoring);
- bare: a plain loop in this process: rows of the memory map by the sampler's indices, ``DevicePreprocess``,
  forward, backward, step; timed per epoch in the same way.

Repeats are interleaved (bundle, bare, then bare, bundle, ...) so both see the same background load. A
repeat's rate is the mean of its epochs after the first (steady state: the first carries the warm-up). Prints
each repeat's ratio bundle / bare, their median and their spread.

Then the harness's own cost per iteration, which a fast device step would expose: the cell's trainer (its
loader, ``prepare_batch``, Ignite engine and handlers, parsed from its configs in this process) with the
network replaced by one linear layer, against the bare loop with that layer; ms per iteration, median of
epochs after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def bare_loop(cache_file, rows, labels, args) -> list[float]:
    """Images/s of each epoch of a plain PyTorch training loop on the cell's training rows."""
    import torch
    from monai.bundle import ConfigParser

    from monai_cxr.cell.batches import DevicePreprocess
    from monai_cxr.cell.sampling import SubsampleSampler
    from monai_cxr.grid.networks import network_def

    torch.manual_seed(0)
    cache = np.load(cache_file, mmap_mode="r")
    net = ConfigParser({"n": network_def(args.arch)}).get_parsed_content("n").train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    prepare = DevicePreprocess(augment_prob=args.augment_prob, seed=0)
    sampler = SubsampleSampler(labels.tolist(), args.subsample, balanced=True, seed=0, batch_size=args.batch_size)
    targets = torch.from_numpy(labels.astype(np.float32))[:, None]
    cpu = torch.device("cpu")
    rates = []
    for _ in range(args.epochs):
        start, images = time.perf_counter(), 0  # the sampler draws the next epoch itself
        for idx in sampler:
            batch = {"image": torch.from_numpy(cache[rows[idx]]).unsqueeze(1), "label": targets[idx]}
            x, y = prepare(batch, cpu)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            images += len(idx)
        rates.append(images / (time.perf_counter() - start))
    return rates


def bundle_run(cell: Path, threads: int) -> list[float]:
    """Images/s of each training epoch of the cell under the stock runner (a fresh run each time)."""
    from monai_cxr.grid.generate import clear_run_outputs
    from monai_cxr.run.cell import bundle_command

    clear_run_outputs(cell)  # a fresh run, never a resumed one
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(bundle_command(cell), cwd=cell, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the bundle run failed:\n{proc.stderr[-3000:]}")
    return json.loads((cell / "run.json").read_text())["epoch_images_per_s"]


def overhead(cell: Path, cache_file: Path, rows, labels, args, epochs: int = 5) -> tuple[float, float]:
    """Seconds per iteration of the cell's trainer and of the bare loop, both with a linear network."""
    import torch
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    from monai_cxr.cell.batches import DevicePreprocess

    r, b, n = args.resolution, args.batch_size, max(args.subsample, 2048)  # enough iterations per epoch
    linear = f"$torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear({r * r}, 1))"
    parser = ConfigParser()
    parser.read_config([str(cell / "configs/train.json"), str(cell / "configs/override.json")])
    parser.update(
        {
            "bundle_root": str(cell),
            "network_def": linear,
            "epochs": epochs,
            "subsample": n,
            "log_seconds": 0,
            "val_interval": epochs + 1,
        }
    )
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    start, engine = {}, []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: start.update(t=time.perf_counter()))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(every=n // b), lambda e: engine.append((time.perf_counter() - start["t"]) / (n // b))
    )
    trainer.run()
    cache = np.load(cache_file, mmap_mode="r")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(r * r, 1))
    opt = torch.optim.AdamW(net.parameters(), fused=True)
    prepare, loss_fn, cpu = DevicePreprocess(augment_prob=args.augment_prob), torch.nn.BCEWithLogitsLoss(), "cpu"
    targets, rng, bare = torch.from_numpy(labels.astype(np.float32))[:, None], np.random.default_rng(0), []
    for _ in range(epochs):
        t = time.perf_counter()
        order = rng.integers(0, len(rows), n)
        for i in range(n // b):
            idx = order[i * b : (i + 1) * b]
            x, y = prepare({"image": torch.from_numpy(cache[rows[idx]]).unsqueeze(1), "label": targets[idx]}, cpu)
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt.step()
        bare.append((time.perf_counter() - t) / (n // b))
    return statistics.median(engine[1:]), statistics.median(bare[1:])


def steady(rates: list[float]) -> float:
    return statistics.mean(rates[1:] or rates)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is left out (warm-up)")
    parser.add_argument("--subsample", type=int, default=512, help="images per epoch")
    parser.add_argument("--augment-prob", type=float, default=0.5)
    parser.add_argument("--arch", default="resnet34")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from conftest import make_hand_study

    from monai_cxr.grid.generate import GridSettings, generate

    print(
        f"{args.arch} {args.resolution} px, batch {args.batch_size}, {args.epochs} epochs x {args.subsample} "
        f"images, augment_prob {args.augment_prob}, {args.threads} thread(s), {args.repeats} interleaved repeats; "
        f"load average before: {load_average()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        study = make_hand_study(Path(tmp) / "study", {"Mass": None}, n_patients=256, resolutions=(args.resolution,))
        settings = GridSettings(
            labels=["Mass"],
            resolutions=[args.resolution],
            archs=[args.arch],
            epochs=args.epochs,
            batch_size=args.batch_size,
            subsample=args.subsample,
            augment_prob=args.augment_prob,
        )
        (cell,) = generate(study, settings)
        datalist = json.loads((cell / "datalist.json").read_text())
        rows = np.array([item["image"] for item in datalist["training"]], dtype=np.int64)
        labels = np.array([item["label"][0] for item in datalist["training"]], dtype=np.int64)
        cache_file = study / "data" / "cache" / f"r{args.resolution}.npy"
        ratios = []
        for r in range(args.repeats):
            runs = {}
            for name in ("bundle", "bare") if r % 2 == 0 else ("bare", "bundle"):
                runs[name] = (
                    bundle_run(cell, args.threads) if name == "bundle" else bare_loop(cache_file, rows, labels, args)
                )
            bundle, bare = steady(runs["bundle"]), steady(runs["bare"])
            ratios.append(bundle / bare)
            print(
                f"repeat {r + 1}: bundle {bundle:7.1f} images/s, bare {bare:7.1f} images/s, ratio {bundle / bare:.3f}"
                f"  (epochs: bundle {runs['bundle']}, bare {[round(x, 2) for x in runs['bare']]})",
                flush=True,
            )
        print(
            f"ratio bundle / bare: median {statistics.median(ratios):.3f}, spread {min(ratios):.3f}-"
            f"{max(ratios):.3f} over {len(ratios)} repeats  (target >= 0.97); load average: {load_average()}"
        )
        engine, bare = overhead(cell, cache_file, rows, labels, args)
    print(
        f"with a linear network instead: bundle {engine * 1e3:.2f} ms/iteration, bare {bare * 1e3:.2f}: the harness "
        f"(loader, prepare_batch, engine, handlers) adds {(engine - bare) * 1e3:.2f} ms per iteration"
    )


if __name__ == "__main__":
    main()
