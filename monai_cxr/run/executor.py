"""``monai-cxr run``: run a study's unfinished cells where the user asks.

``run_cell`` (``run/cell.py``) runs one cell; the executors only decide where: ``local`` in
threads of this process (``run/local.py``), ``ray`` as Ray tasks on a cluster
(``run/ray_cluster.py``). Both write the same files into the study directory, so a study
started with one can finish with the other. Finished cells are skipped, so a rerun resumes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from monai_cxr.errors import CxrError
from monai_cxr.grid.generate import cell_dirs, study_cells
from monai_cxr.progress import format_duration, progress_bar
from monai_cxr.run.cell import cell_resolution
from monai_cxr.run.local import local_outcomes
from monai_cxr.run.progress import StudyProgress, cell_cost
from monai_cxr.run.ray_cluster import ray_outcomes

log = logging.getLogger(__name__)

__all__ = ["EXECUTORS", "RunSummary", "check_run_options", "run_cells"]


@dataclass
class RunSummary:
    """What a ``run`` did: cell names by outcome."""

    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy


EXECUTORS = ("local", "ray")


def check_run_options(executor: str, address: str | None, gpus_per_cell: float | None, nproc_per_node: int) -> None:
    """Refuse, before any work, options that do not go together (``study`` checks before it prepares)."""
    if executor not in EXECUTORS:
        raise CxrError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "local" and (address or gpus_per_cell is not None):
        raise CxrError("--address and --gpus-per-cell apply to --executor ray")
    if nproc_per_node < 1:
        raise CxrError(f"--nproc-per-node {nproc_per_node} must be at least 1")


def run_cells(study_dir: str | os.PathLike, jobs: int | None = 1, progress: bool = True,
              cells: list[str] | None = None, executor: str = "local", address: str | None = None,
              gpus_per_cell: float | None = None, cpus_per_cell: float = 1, nproc_per_node: int = 1) -> RunSummary:
    """Run the study's unfinished cells; report each as it ends.

    Args:
        jobs: cells run at a time (local: default 1; ray: default as many as the cluster fits).
        executor: ``local`` (subprocesses here) or ``ray`` (Ray tasks; ``pip install monai-cxr[ray]``).
        address: the Ray cluster (e.g. ``auto``); without it a local Ray is started on loopback.
        gpus_per_cell: GPUs a Ray task reserves [default: ``nproc_per_node`` when the cluster
            has GPUs, else 0].
        cpus_per_cell: CPUs a Ray task reserves.
        nproc_per_node: processes per cell (DistributedDataParallel under torchrun).
    """
    check_run_options(executor, address, gpus_per_cell, nproc_per_node)
    root = cell_dirs(study_dir)
    names = cells if cells is not None else study_cells(study_dir)
    summary = RunSummary()
    pending = []
    for name in names:
        if (root / name / "run.json").is_file():
            summary.skipped.append(name)
        else:
            pending.append(name)
    if summary.skipped:
        log.info(f"{len(summary.skipped)} of {len(names)} cells already finished; skipping them")
    if executor == "local":
        jobs = max(1, int(jobs or 1))
    if jobs != 1:  # largest first, so that the last cells to finish are short ones (cost ~ R^2)
        pending.sort(key=lambda name: -cell_resolution(root / name))
    paths = [root / name for name in pending]
    tracker = StudyProgress({path.name: cell_cost(path) for path in paths}, total=len(names),
                            done=len(summary.skipped), slots=jobs)
    if pending:
        log.info(f"running {len(pending)} cells ({executor}" + (f", {jobs} at a time" if jobs else "") + ")")
    if executor == "ray":
        outcomes = ray_outcomes(paths, jobs=jobs, address=address, gpus_per_cell=gpus_per_cell,
                                cpus_per_cell=cpus_per_cell, nproc_per_node=nproc_per_node)
    else:
        outcomes = local_outcomes(paths, jobs, nproc_per_node)
    # a live bar on a terminal only; the lines below reach logs and pipes too
    bar = progress_bar(total=len(pending), unit="cell", desc="cells", enabled=progress and bool(pending),
                       dynamic_ncols=True)
    try:
        for outcome in outcomes:
            getattr(summary, outcome.status).append(outcome.name)
            tracker.finish(outcome.name, ok=outcome.status == "finished")
            if outcome.status == "finished":
                log.info(f"{tracker.status()}  done    {outcome.name}: {outcome.result}")
            elif outcome.status == "failed":
                log.info(f"{tracker.status()}  FAILED  {outcome.name} (exit {outcome.returncode}); log: {outcome.log}")
            elif outcome.status == "busy":
                log.info(f"{tracker.status()}  busy    {outcome.name}: another process is running it")
            else:
                log.info(f"{tracker.status()}  skipped {outcome.name}: finished by another run meanwhile")
            bar.update()
    finally:
        outcomes.close()
        bar.close()
    parts = [f"{len(summary.finished)} finished", f"{len(summary.skipped)} skipped"]
    if summary.failed:
        parts.append(f"{len(summary.failed)} failed")
    if summary.busy:
        parts.append(f"{len(summary.busy)} running elsewhere")
    log.info("cells: " + ", ".join(parts) + (f" in {format_duration(tracker.elapsed)}" if pending else ""))
    return summary
