"""Training images/s on a GPU: a bare loop on data already on the device vs the harness's input path.

    .venv/bin/python benchmarks/gpu_throughput.py --out gpu_throughput.md
        [--archs resnet34 densenet121] [--resolutions 32 64 128 224 256 320 448 512 600]
        [--batch-size auto] [--iters 20] [--warmup 5] [--workers 8] [--augment-prob 0.5]
    .venv/bin/python benchmarks/gpu_throughput.py --dry-run     # CPU, tiny sizes, 2 iterations: checks the script

Both train the study's networks (``monai_cxr.grid.networks``) with bf16 autocast, channels-last weights and
inputs, fused AdamW and BCE with logits, at the same batch size:

- bare: a plain PyTorch loop on one normalised batch that already lies on the device (the ceiling);
- harness: ``CacheBatchDataset`` on a synthetic uint8 cache + ``DataLoader(pin_memory, workers,
  collate_fn=collate_batch)`` + ``DevicePreprocess(augment_prob)`` as ``prepare_batch`` +
  ``SupervisedTrainer(optim_set_to_none=True, decollate=False)``, timed from the end of the warm-up
  iterations to the end of the run (device synchronised at both ends only);
- input: the harness's loader + ``prepare_batch`` alone, no network (how fast the input path could feed);
- syncs/it: host-device synchronisations per harness iteration, counted with
  ``torch.cuda.set_sync_debug_mode("warn")`` over ``--sync-check`` iterations of a separate short run, after
  two warm-up iterations (0 is the goal).

Prints one row per (arch, resolution) with harness / bare, and writes the table as Markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESOLUTIONS = [32, 64, 128, 224, 256, 320, 448, 512, 600]


def auto_batch(res: int) -> int:
    """A batch that fits both networks on a large GPU at bf16 (DenseNet121 is the hungry one)."""
    return 512 if res <= 64 else 256 if res <= 224 else 128 if res <= 320 else 64


def make_net(arch: str, device, channels_last: bool):
    import torch
    from monai.bundle import ConfigParser

    from monai_cxr.grid.networks import network_def

    net = ConfigParser({"n": network_def(arch)}).get_parsed_content("n")
    return net.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def make_optimizer(net):
    import torch

    return torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(arch: str, res: int, batch: int, args, device) -> float:
    """Images/s of a plain training loop on a batch already on the device."""
    import torch

    torch.manual_seed(0)
    net, memory_format = make_net(arch, device, args.channels_last), args.memory_format
    opt, loss_fn = make_optimizer(net), torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, res, res, device=device).contiguous(memory_format=memory_format)
    y = (torch.rand(batch, 1, device=device) < 0.5).float()
    net.train()
    for step in range(args.warmup + args.iters):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    sync(device)
    return args.iters * batch / (time.perf_counter() - start)


def make_cache(folder: str, res: int, n: int) -> str:
    """A synthetic uint8 cache of ``n`` images, written in chunks (little memory), then read once (warm)."""
    path = os.path.join(folder, f"r{res}.npy")
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, res, res))
    rng = np.random.default_rng(res)
    for start in range(0, n, 256):
        stop = min(n, start + 256)
        cache[start:stop] = rng.integers(0, 256, (stop - start, res, res), dtype=np.uint8)
    cache.flush()
    del cache
    return path


def loader_and_prepare(cache_file: str, n: int, batch: int, steps: int, args, device):
    import torch
    from torch.utils.data import DataLoader

    from monai_cxr.cell.batches import CacheBatchDataset, DevicePreprocess, collate_batch
    from monai_cxr.cell.sampling import SubsampleSampler

    labels = np.random.default_rng(0).integers(0, 2, n)
    data = [{"image": i, "label": [int(labels[i])], "image_id": f"i{i}", "patient_id": f"p{i}"} for i in range(n)]
    sampler = SubsampleSampler(labels, num_samples=batch * steps, balanced=True, seed=0, batch_size=batch)
    pin = device.type == "cuda"
    loader = DataLoader(  # as the template's training loader
        CacheBatchDataset(cache_file, data, with_ids=False),
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=args.workers,
        pin_memory=pin,
        persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers else None,
    )
    prepare = DevicePreprocess(augment_prob=args.augment_prob, seed=0)
    return loader, prepare, pin, torch


def input_only(cache_file: str, n: int, res: int, batch: int, args, device) -> float:
    """Images/s of the loader + prepare_batch alone."""
    loader, prepare, pin, _ = loader_and_prepare(cache_file, n, batch, args.warmup + args.iters, args, device)
    for step, batchdata in enumerate(loader):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        prepare(batchdata, device, pin, memory_format=args.memory_format)
    sync(device)
    return args.iters * batch / (time.perf_counter() - start)


def make_trainer(arch: str, cache_file: str, n: int, batch: int, steps: int, args, device):
    """The harness path: cache batches -> pinned loader -> DevicePreprocess -> MONAI SupervisedTrainer."""
    from monai.engines import SupervisedTrainer

    loader, prepare, pin, torch = loader_and_prepare(cache_file, n, batch, steps, args, device)
    torch.manual_seed(0)
    net = make_net(arch, device, args.channels_last)
    return SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=make_optimizer(net),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        prepare_batch=prepare,
        non_blocking=pin,
        decollate=False,
        amp=args.amp,
        amp_kwargs={"dtype": torch.bfloat16} if args.amp else None,
        optim_set_to_none=True,
        to_kwargs={"memory_format": args.memory_format},
    )


def harness(arch: str, cache_file: str, n: int, batch: int, args, device) -> float:
    """Images/s of the harness path, from the end of the warm-up to the end of the run."""
    from ignite.engine import Events

    trainer = make_trainer(arch, cache_file, n, batch, args.warmup + args.iters, args, device)
    clock: dict = {}

    @trainer.on(Events.ITERATION_COMPLETED(once=args.warmup))
    def _start(engine):
        sync(device)
        clock["start"] = time.perf_counter()

    @trainer.on(Events.COMPLETED)
    def _stop(engine):
        sync(device)
        clock["stop"] = time.perf_counter()

    trainer.run()
    return args.iters * batch / (clock["stop"] - clock["start"])


def sync_count(arch: str, cache_file: str, n: int, batch: int, args, device) -> float:
    """Host-device synchronisations per harness iteration, after two warm-up iterations (CUDA only)."""
    import torch
    from ignite.engine import Events

    trainer = make_trainer(arch, cache_file, n, batch, 2 + args.sync_check, args, device)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: torch.cuda.set_sync_debug_mode("warn"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught) / args.sync_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet34", "densenet121"])
    parser.add_argument("--resolutions", type=int, nargs="+", default=RESOLUTIONS)
    parser.add_argument("--batch-size", default="auto", help="a number, or auto (512 at <=64 px ... 64 above 320)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=min(8, max(0, (os.cpu_count() or 1) - 1)))
    parser.add_argument("--augment-prob", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=2048, help="images in each synthetic cache")
    parser.add_argument("--sync-check", type=int, default=3, help="harness iterations to count syncs on (0: off)")
    parser.add_argument("--out", help="write the table as Markdown here")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, 2 iterations: check the script")
    args = parser.parse_args()
    if args.warmup < 1 or args.iters < 1:
        parser.error("--warmup and --iters must be at least 1")
    import torch

    if args.dry_run:
        device = torch.device("cpu")
        args.resolutions, args.iters, args.warmup, args.workers, args.images = [32, 64], 2, 1, 0, 32
        args.batch_size, args.sync_check = "4", 0
    elif not torch.cuda.is_available():
        sys.exit("gpu_throughput: no CUDA device here; use --dry-run to check the script on a CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    args.amp = device.type == "cuda"
    args.channels_last = device.type == "cuda"
    args.memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    on = {True: "on", False: "off"}
    title = (
        f"{name}; bf16 autocast {on[args.amp]}, channels-last {on[args.channels_last]}, "
        f"{args.workers} loader workers, augment_prob {args.augment_prob}, {args.iters} timed iterations "
        f"after {args.warmup}"
    )
    header = ["arch", "px", "batch", "bare img/s", "harness img/s", "harness/bare", "input img/s", "syncs/it"]
    rows = []
    print(title)
    print(" | ".join(header))
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.resolutions:
            batch = auto_batch(res) if args.batch_size == "auto" else int(args.batch_size)
            n = max(args.images, batch)
            cache_file = make_cache(tmp, res, n)
            feed = input_only(cache_file, n, res, batch, args, device)
            for arch in args.archs:
                try:
                    b = bare(arch, res, batch, args, device)
                    h = harness(arch, cache_file, n, batch, args, device)
                    syncs = sync_count(arch, cache_file, n, batch, args, device) if args.sync_check else None
                    row = [
                        arch,
                        res,
                        batch,
                        f"{b:,.0f}",
                        f"{h:,.0f}",
                        f"{h / b:.3f}",
                        f"{feed:,.0f}",
                        "-" if syncs is None else f"{syncs:.1f}",
                    ]
                except torch.cuda.OutOfMemoryError:
                    row = [arch, res, batch, "OOM", "", "", f"{feed:,.0f}", ""]
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                print(" | ".join(str(v) for v in row), flush=True)
            os.remove(cache_file)
    table = (
        "\n".join(
            [f"{title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
        )
        + "\n"
    )
    print()
    print(table)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
