"""``monai-cxr run``: execute a study's cells with the stock MONAI bundle runner.

Each cell runs as ``python -m monai.bundle run --config_file CELL/configs/train.json`` in its
own process, so a crash, or a ``kill -9`` of the whole study, loses at most the cells that
were running. A cell is finished exactly when its ``run.json`` exists (written last,
atomically); finished cells are skipped, so a rerun resumes. A cell being run holds a lock on
``CELL/.lock`` (inherited by its process), so two runs of one study never run the same cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from monai_cxr.bundle.generate import clear_run_outputs, cell_dirs, study_cells

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None

__all__ = ["RunSummary", "bundle_command", "run_cells"]

LOG_NAME = "logs/run.log"


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


def bundle_command(cell_dir: Path, python: str | None = None) -> list[str]:
    """The stock runner's command line for one cell."""
    return [python or sys.executable, "-m", "monai.bundle", "run",
            "--config_file", str(cell_dir / "configs" / "train.json")]


def _lock(cell_dir: Path) -> int | None:
    """An open, exclusively locked ``.lock`` of the cell, or None if another process holds it."""
    fd = os.open(cell_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def _resolution(cell_dir: Path) -> int:
    try:
        return int(json.loads((cell_dir / "cell.json").read_text())["resolution"])
    except (OSError, ValueError, KeyError):
        return 0


def _result_line(cell_dir: Path) -> str:
    run = json.loads((cell_dir / "run.json").read_text())
    se = run.get("best_val_auc_se")
    auc = f"AUC {run['best_val_auc']:.3f}" + (f" ± {se:.3f}" if se is not None else "")
    return f"{auc}  {run['train_seconds']:.0f} s  {run.get('images_per_s') or 0:.0f} img/s"


class _Job:
    def __init__(self, name: str, cell_dir: Path, fd: int, threads: int) -> None:
        self.name, self.cell_dir, self.fd = name, cell_dir, fd
        clear_run_outputs(cell_dir)  # leftovers of an interrupted run
        self.log = cell_dir / LOG_NAME
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(bundle_command(cell_dir), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=cell_dir, env=env, pass_fds=(fd,))
        self.start = time.monotonic()

    def close(self) -> None:
        os.close(self.fd)


def run_cells(study_dir: str | os.PathLike, jobs: int = 1, echo=print, progress: bool = True,
              cells: list[str] | None = None) -> RunSummary:
    """Run the study's unfinished cells, ``jobs`` at a time; report each as it ends."""
    from tqdm.auto import tqdm

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
        echo(f"{len(summary.skipped)} of {len(names)} cells already finished; skipping them")
    jobs = max(1, int(jobs))
    if jobs > 1:  # largest first, so that the last cells to finish are short ones (cost ~ R^2)
        pending.sort(key=lambda name: -_resolution(root / name))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running: list[_Job] = []
    bar = tqdm(total=len(pending), unit="cell", desc="cells", disable=None if progress and pending else True,
               dynamic_ncols=True)
    try:
        queue = list(pending)
        while queue or running:
            while queue and len(running) < jobs:
                name = queue.pop(0)
                fd = _lock(root / name)
                if fd is None:
                    summary.busy.append(name)
                    bar.write(f"busy    {name}: another process is running it")
                    bar.update()
                    continue
                if (root / name / "run.json").is_file():  # finished by another run meanwhile
                    os.close(fd)
                    summary.skipped.append(name)
                    bar.update()
                    continue
                running.append(_Job(name, root / name, fd, threads))
                bar.set_postfix_str(", ".join(j.name for j in running), refresh=True)
            time.sleep(0.2)
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                job.close()
                if job.proc.returncode == 0 and (job.cell_dir / "run.json").is_file():
                    summary.finished.append(job.name)
                    bar.write(f"done    {job.name}: {_result_line(job.cell_dir)}")
                else:
                    summary.failed.append(job.name)
                    bar.write(f"FAILED  {job.name} (exit {job.proc.returncode}); log: {job.log}")
                bar.update()
                bar.set_postfix_str(", ".join(j.name for j in running), refresh=True)
    except BaseException:
        for job in running:
            job.proc.terminate()
        for job in running:
            try:
                job.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                job.proc.kill()
            job.close()
        raise
    finally:
        bar.close()
    parts = [f"{len(summary.finished)} finished", f"{len(summary.skipped)} skipped"]
    if summary.failed:
        parts.append(f"{len(summary.failed)} failed")
    if summary.busy:
        parts.append(f"{len(summary.busy)} running elsewhere")
    echo("cells: " + ", ".join(parts))
    return summary
