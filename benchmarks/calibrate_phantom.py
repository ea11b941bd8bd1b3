"""Check the phantom's learnability the way the quick study will: small ResNet34s from scratch.

    .venv/bin/python benchmarks/calibrate_phantom.py [--patients 200] [--size 256]
        [--labels Mass,Nodule] [--resolutions 32,64,128] [--presentations 1500] [--seeds 0]

Synthesises a phantom, splits it 80/20 by patient, area-averages (PIL BOX) the images to
each resolution, trains one binary MONAI ResNet34 (ImageNet stem: 7x7 stride-2 conv plus
max-pool) per (label, resolution) with plain PyTorch -- class-balanced batches, Adam, each
image normalised to zero mean and unit variance -- and prints the validation AUC of each
cell and, per label, AUC(lowest resolution) / AUC(highest resolution).

The phantom is calibrated so that Mass is learnt already at 32 px while Nodule is near
chance at 32 px and clearly learnt at 128 px, i.e. Nodule's ratio is clearly below Mass's.
Measured (200 patients, 256 px phantom, 1500 presentations, 1 thread; phantom and
training seed 0, then 1):

    label        32      64     128   AUC32/AUC128
    Mass      0.876   0.976   1.000   0.876     (--seed 0 --seeds 0)
    Nodule    0.413   0.607   0.994   0.415
    Mass      0.945   0.998   0.642   1.473     (--seed 1 --seeds 1)
    Nodule    0.544   0.788   0.999   0.544

Each cell is scored with its final weights: one unlucky last step can sink a cell (Mass
at 128 px, seed 1), so a study should keep the best validation checkpoint.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def load(data_dir: Path, resolutions):
    """Images of the phantom at every resolution (area-averaged), labels and patient ids."""
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(data_dir / "Data_Entry_2017.csv")
    arrays = {r: np.empty((len(table), r, r), np.float32) for r in resolutions}
    for i, name in enumerate(table["Image Index"]):
        with Image.open(data_dir / "images" / name) as img:
            for r in resolutions:
                arrays[r][i] = np.asarray(img.resize((r, r), Image.BOX), np.float32)
    for a in arrays.values():  # each image to zero mean, unit variance
        a -= a.mean(axis=(1, 2), keepdims=True)
        a /= a.std(axis=(1, 2), keepdims=True) + 1e-6
    return table, arrays


def train_cell(x_train, y_train, x_val, presentations, batch, lr, seed):
    """Train one binary ResNet34 from scratch; return (mean loss of the last 20 steps, validation scores)."""
    import torch
    from monai.networks.nets import resnet34

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = resnet34(spatial_dims=2, n_input_channels=1, num_classes=1, conv1_t_size=7, conv1_t_stride=2)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    pos, neg = np.flatnonzero(y_train == 1), np.flatnonzero(y_train == 0)
    net.train()
    losses = []
    for _ in range(max(1, presentations // batch)):
        idx = np.concatenate([rng.choice(pos, batch // 2), rng.choice(neg, batch - batch // 2)])
        xb = torch.from_numpy(x_train[idx][:, None])
        yb = torch.from_numpy(y_train[idx].astype(np.float32))[:, None]
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        return float(np.mean(losses[-20:])), np.concatenate(
            [
                torch.sigmoid(net(torch.from_numpy(x_val[i : i + 64][:, None]))).numpy()[:, 0]
                for i in range(0, len(x_val), 64)
            ]
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--labels", default="Mass,Nodule")
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--presentations", type=int, default=1500, help="training images shown per cell")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--data", type=Path, help="reuse this phantom folder instead of synthesising")
    args = parser.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score

    from monai_cxr.data.phantom import synthesize

    torch.set_num_threads(args.threads)
    labels = args.labels.split(",")
    resolutions = sorted(int(r) for r in args.resolutions.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        if args.data is None:
            print(synthesize(data, patients=args.patients, size=args.size, seed=args.seed, workers=1), flush=True)
        table, arrays = load(data, resolutions)
    patients = table["Patient ID"].unique()
    val_patients = np.random.default_rng(args.seed).permutation(patients)[: round(0.2 * len(patients))]
    is_val = table["Patient ID"].isin(val_patients).to_numpy()
    print(
        f"{(~is_val).sum()} train / {is_val.sum()} val images; {args.presentations} presentations per cell, "
        f"batch {args.batch}, Adam lr {args.lr}, {args.threads} thread(s)",
        flush=True,
    )
    auc = {}
    for label in labels:
        y = (
            table["Finding Labels"]
            .str.split("|")
            .apply(lambda ls, label=label: label in ls)
            .to_numpy()
            .astype(np.int64)
        )
        print(f"{label}: {y[~is_val].sum()} train / {y[is_val].sum()} val positives", flush=True)
        for r in resolutions:
            values = []
            for seed in seeds:
                t0 = time.perf_counter()
                loss, scores = train_cell(
                    arrays[r][~is_val], y[~is_val], arrays[r][is_val], args.presentations, args.batch, args.lr, seed
                )
                values.append(roc_auc_score(y[is_val], scores))
                print(
                    f"  {label:8s} {r:4d} px  seed {seed}  AUC {values[-1]:.3f}  "
                    f"(final train loss {loss:.3f}, {time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            auc[label, r] = float(np.mean(values))
    lo, hi = resolutions[0], resolutions[-1]
    print(f"\nmean val AUC over {len(seeds)} seed(s)")
    print("label     " + "".join(f"{r:>8d}" for r in resolutions) + f"   AUC{lo}/AUC{hi}")
    for label in labels:
        print(
            f"{label:10s}"
            + "".join(f"{auc[label, r]:8.3f}" for r in resolutions)
            + f"   {auc[label, lo] / auc[label, hi]:.3f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
