"""The study-level TensorBoard log: one run per cell (HParams session + training curves), figures, tables.

``tensorboard --logdir STUDY/report/tensorboard`` shows, per cell, one run named exactly as its
bundle folder (``{label-slug}__{arch}__r{R}__s{seed}``; a finding of a multi-label cell
``multilabel__{arch}__r{R}__s{seed}/{label-slug}``) holding both the cell's HParams session
and its training curves (the event files of ``bundles/<cell>/logs/`` are copied in), so each
session in the HParams dashboard links to its own curves. Layout of ``DIR/tensorboard/``:

- ``<cell>/``: the HParams session: hparams ``label, task, arch, resolution, seed`` and whichever of
  ``learning_rate, epochs, batch_size, init, torch_threads, device`` the cells recorded
  (``run.json``, else the grid in ``study.json``); metrics ``hparam/auc``, ``hparam/auc_se`` (the
  cell's, on its scored fold) and ``hparam/pooled_auc``, ``hparam/pooled_auc_se``,
  ``hparam/pooled_auc_sd`` (its label x arch x resolution over seeds); NaN where undefined. Every
  session declares the same discrete domains, so the dashboard compares all cells. Sub-folders of
  a cell's ``logs/`` become child runs ``<cell>/<sub>``.
- top level: scalars ``auc/<label-slug>/<arch>`` (``<arch>-multilabel`` for a multi-label result;
  pooled AUC, the resolution as the step), the report's figures as images (``figures/<name>``) and
  the verdict, pooled and summary tables as text.

The log is written beside the old one and swapped in, so a rerun never mixes events.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
from torch.utils.tensorboard import SummaryWriter

from monai_cxr.grid.cells import label_slug
from monai_cxr.report.tables import init_source

# settings a grid can vary, from run.json (what the cell ran) or else study.json's grid
SETTINGS = {"learning_rate": float, "epochs": int, "batch_size": int, "init": str, "torch_threads": int, "device": str}
EVENTS = "events.out.tfevents.*"


def _settings(cell, grid: dict) -> dict:
    out = {}
    for key, kind in SETTINGS.items():
        value = init_source(cell.run) if key == "init" else cell.run.get(key)
        if value is None:
            value = grid.get(key)
        if value is not None:
            try:
                out[key] = kind(value)
            except (TypeError, ValueError):
                out[key] = str(value)
    return out


def _hparams(cells, grid: dict) -> dict:
    """``{cell name: hparam dict}``; a setting is kept only where every cell gives it one type."""
    out = {}
    for cell in cells:
        out[cell.name] = {
            "label": cell.label,
            "task": cell.task,
            "arch": cell.arch,
            "resolution": cell.resolution,
            "seed": cell.seed,
            **_settings(cell, grid),
        }
    for key in SETTINGS:
        types = {type(h[key]) for h in out.values() if key in h}
        if len(types) > 1:  # mixed types break the dashboard's domain: show them as text
            for h in out.values():
                if key in h:
                    h[key] = str(h[key])
    return out


def _domains(hparams: dict) -> dict:
    """Discrete domains of the non-float hparams, the same in every session."""
    keys = {k for h in hparams.values() for k, v in h.items() if not isinstance(v, float)}
    return {k: sorted({h[k] for h in hparams.values() if k in h}) for k in sorted(keys)}


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def write_tensorboard(study, summary, pooled, figures: list, texts: dict, out_dir) -> Path:
    """Write the study log into ``out_dir/tensorboard`` and return that folder."""
    out_dir = Path(out_dir)
    final, tmp, old = (out_dir / n for n in ("tensorboard", ".tensorboard.tmp", ".tensorboard.old"))
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)

    hparams = _hparams(study.finished, study.settings.get("grid") or {})
    domains = _domains(hparams)
    rows = summary.set_index(["label", "task", "arch", "resolution", "seed"])
    pool = pooled.set_index(["label", "task", "arch", "resolution"])
    with SummaryWriter(log_dir=str(tmp)) as writer:
        for cell in study.finished:
            row, p = rows.loc[cell.key], pool.loc[(cell.label, cell.task, cell.arch, cell.resolution)]
            # the same metric keys in every session (NaN where undefined): each carries the
            # experiment definition, and the dashboard reads whichever it finds first
            metrics = {
                "hparam/auc": _f(row["auc"]),
                "hparam/auc_se": _f(row["auc_se"]),
                "hparam/pooled_auc": _f(p["auc_mean"]),
                "hparam/pooled_auc_se": _f(p["auc_se"]),
                "hparam/pooled_auc_sd": _f(p["auc_sd"]),
            }
            writer.add_hparams(hparams[cell.name], metrics, hparam_domain_discrete=domains, run_name=cell.name)
            logs = cell.path / "logs"
            for event in sorted(logs.rglob(EVENTS)) if logs.is_dir() else []:
                dest = tmp / cell.name / event.relative_to(logs)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(event, dest)
        rated = pooled.dropna(subset=["auc_mean"])
        for (label, task, arch), group in rated.groupby(["label", "task", "arch"]):
            name = arch if task == "binary" else f"{arch}-{task}"
            for _, r in group.sort_values("resolution").iterrows():
                writer.add_scalar(
                    f"auc/{label_slug(label)}/{name}", float(r["auc_mean"]), global_step=int(r["resolution"])
                )
        for drawn in figures:
            image = mpimg.imread(drawn.png)[..., :3]  # RGBA floats in [0, 1] -> RGB
            writer.add_image(f"figures/{drawn.name}", np.ascontiguousarray(image), dataformats="HWC")
        for name, text in texts.items():
            writer.add_text(name, text)

    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
