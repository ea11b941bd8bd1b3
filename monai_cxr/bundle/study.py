"""``monai-cxr study``: synth (phantom presets) + prepare + generate + run + report, resumable."""

from __future__ import annotations

import time
from pathlib import Path

from monai_cxr.bundle.presets import PRESETS
from monai_cxr.errors import CxrError

__all__ = ["run_study", "auc_table"]


def auc_table(study_dir, cell_names) -> str:
    """A plain table of the finished cells' best validation AUCs (with DeLong SE when recorded)."""
    import json

    from monai_cxr.bundle.generate import cell_dirs

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
              report: bool = True, force: bool = False, echo=print, progress: bool = True,
              run_options: dict | None = None) -> int:
    """Run a whole study; return the number of failed cells. Every stage skips finished work.

    ``run_options`` go to :func:`~monai_cxr.bundle.executor.run_cells` (e.g. ``executor="ray",
    address="auto"``), so a preset can run on a cluster as well as here.
    """
    from monai_cxr.bundle.executor import run_cells
    from monai_cxr.bundle.generate import generate
    from monai_cxr.data.prepare import prepare

    if preset not in PRESETS:
        raise CxrError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    study_dir = Path(study_dir or Path("studies") / p.name).resolve()
    start = time.perf_counter()
    echo(f"study {p.name}: {p.description} -> {study_dir}")
    if p.synthetic:
        data_dir = Path(data_dir) if data_dir else study_dir / "phantom"
        if not (data_dir / "Data_Entry_2017.csv").is_file():
            from monai_cxr.data.phantom import synthesize

            echo(synthesize(data_dir, **p.phantom))
    elif data_dir is None:
        raise CxrError(f"preset {p.name!r} needs --data-dir (the folder of the NIH ChestX-ray14 release)")
    prepare(dataset="nih", data_dir=data_dir, study_dir=study_dir, resolutions=p.grid.resolutions,
            seed=p.split_seed, echo=echo, progress=progress)
    generate(study_dir, p.grid, force=force, echo=echo)
    run_options = run_options or {}
    if jobs is None and run_options.get("executor", "local") == "local":
        jobs = p.jobs  # the preset's local parallelism; Ray fills the cluster by default
    summary = run_cells(study_dir, jobs=jobs, echo=echo, progress=progress, **run_options)
    names = summary.finished + summary.skipped
    if report and names:
        from monai_cxr.report import make_report

        make_report(study_dir, echo=echo)
    elif names:
        echo(auc_table(study_dir, names))
    echo(f"study {p.name} took {time.perf_counter() - start:.0f} s")
    return len(summary.failed) + len(summary.busy)
