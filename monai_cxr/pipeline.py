"""``monai-cxr study``: synth (phantom presets) + prepare + generate + run + report, resumable."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from monai_cxr.data.phantom import synthesize
from monai_cxr.data.prepare import prepare
from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import cell_dirs, generate
from monai_cxr.grid.presets import PRESETS
from monai_cxr.report import make_report
from monai_cxr.run import executor

log = logging.getLogger(__name__)

__all__ = ["run_study", "auc_table"]


def auc_table(study_dir, cell_names) -> str:
    """A plain table of the finished cells' best validation AUCs (with DeLong SE when recorded)."""
    lines = [f"{'label':<16} {'arch':<12} {'px':>5} {'seed':>4} {'AUC':>7} {'SE':>7}"]
    for name in cell_names:
        path = cell_dirs(study_dir) / name / "run.json"
        if path.is_file():
            run = json.loads(path.read_text())
            se = run.get("best_val_auc_se")
            lines.append(f"{run['label']:<16} {run['arch']:<12} {run['resolution']:>5} {run['seed']:>4} "
                         f"{run['best_val_auc']:>7.3f} {'' if se is None else f'{se:.3f}':>7}")
    return "\n".join(lines)


def run_study(preset: str = "quick", study_dir=None, data_dir=None, jobs: int | None = None,
              report: bool = True, force: bool = False, progress: bool = True,
              run_options: dict | None = None) -> int:
    """Run a whole study; return the number of failed cells. Every stage skips finished work.

    ``run_options`` go to :func:`~monai_cxr.run.executor.run_cells` (e.g. ``executor="ray",
    address="auto"``), so a preset can run on a cluster as well as here.
    """
    if preset not in PRESETS:
        raise CxrError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    study_dir = Path(study_dir or Path("studies") / p.name).resolve()
    start = time.perf_counter()
    log.info(f"study {p.name}: {p.description} -> {study_dir}")
    if data_dir is None and p.synthetic:  # the phantom lives inside the study; a user's folder is only read
        data_dir = study_dir / "phantom"
        if not (data_dir / "Data_Entry_2017.csv").is_file():
            log.info(synthesize(data_dir, **p.phantom, force=True))
    elif data_dir is None:
        raise CxrError(f"preset {p.name!r} needs --data-dir (the folder of the NIH ChestX-ray14 release)")
    prepare(dataset="nih", data_dir=data_dir, study_dir=study_dir, resolutions=p.grid.resolutions,
            seed=p.split_seed, progress=progress)
    generate(study_dir, p.grid, force=force)
    run_options = run_options or {}
    if jobs is None and run_options.get("executor", "local") == "local":
        jobs = p.jobs  # the preset's local parallelism; Ray fills the cluster by default
    summary = executor.run_cells(study_dir, jobs=jobs, progress=progress, **run_options)
    names = summary.finished + summary.skipped
    if names and not report:
        log.info(auc_table(study_dir, names))
    log.info(f"study {p.name} took {time.perf_counter() - start:.0f} s")
    if report and names:
        make_report(study_dir)  # its verdict table is the last thing printed
    return len(summary.failed) + len(summary.busy)
