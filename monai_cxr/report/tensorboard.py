"""The study-level TensorBoard log: cells in the HParams dashboard, figures, the summary.

``tensorboard --logdir STUDY`` then shows each run's own scalars (bundles/<cell>/logs)
beside this log. Layout of ``DIR/tensorboard/``:

- one sub-run per finished cell with an AUC, named like the cell, holding its hparams
  (label, arch, resolution, seed) and metrics ``hparam/auc``, ``hparam/auc_se``; every
  sub-run declares the same discrete domains, so the HParams dashboard compares all cells;
- at the top level: scalars ``auc/<label>/<arch>/s<seed>`` with the resolution as the step
  (AUC against resolution as a TensorBoard chart), the report's figures as images
  (``figures/<name>``) and the summary table as text (``summary``).

The log is written beside the old one and swapped in, so a rerun never mixes events.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
from torch.utils.tensorboard import SummaryWriter


def _run_name(row) -> str:
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(row["label"]))
    return f"{label}__{row['arch']}__r{int(row['resolution'])}__s{int(row['seed'])}"


def _hparams(row) -> dict:
    return {"label": str(row["label"]), "arch": str(row["arch"]),
            "resolution": int(row["resolution"]), "seed": int(row["seed"])}


def write_tensorboard(summary, figures: dict, summary_text: str, out_dir) -> Path:
    """Write the study log into ``out_dir/tensorboard`` and return that folder."""
    out_dir = Path(out_dir)
    final, tmp, old = (out_dir / n for n in ("tensorboard", ".tensorboard.tmp", ".tensorboard.old"))
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)

    rated = summary.dropna(subset=["auc"])
    domains = {
        "label": sorted({str(x) for x in rated["label"]}),
        "arch": sorted({str(x) for x in rated["arch"]}),
        "resolution": sorted({int(x) for x in rated["resolution"]}),
        "seed": sorted({int(x) for x in rated["seed"]}),
    }
    with SummaryWriter(log_dir=str(tmp)) as writer:
        for _, row in rated.iterrows():
            # the same metric keys in every run (NaN SE where undefined): each run carries
            # the experiment definition, and the dashboard reads whichever it finds first
            metrics = {"hparam/auc": float(row["auc"]), "hparam/auc_se": float(row["auc_se"])}
            writer.add_hparams(_hparams(row), metrics, hparam_domain_discrete=domains,
                               run_name=_run_name(row))
        for (label, arch, seed), rows in rated.groupby(["label", "arch", "seed"]):
            for _, row in rows.iterrows():
                writer.add_scalar(f"auc/{label}/{arch}/s{int(seed)}", float(row["auc"]),
                                  global_step=int(row["resolution"]))
        for name, png in figures.items():
            image = mpimg.imread(png)[..., :3]  # RGBA floats in [0, 1] -> RGB
            writer.add_image(f"figures/{name}", np.ascontiguousarray(image), dataformats="HWC")
        writer.add_text("summary", summary_text)

    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
