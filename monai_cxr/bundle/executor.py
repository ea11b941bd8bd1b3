"""``monai-cxr run``: execute a study's cells with the stock MONAI bundle runner.

Each cell runs as ``python -m monai.bundle run --config_file CELL/configs/train.json`` in its
own process, so a crash, or a ``kill -9`` of the whole study, loses at most the cells that
were running. A cell is finished exactly when its ``run.json`` exists (written last,
atomically); finished cells are skipped, so a rerun resumes. A cell being run holds a lock on
``CELL/.lock`` (inherited by its process), so two runs of one study never run the same cell.

``run_cell`` runs one cell that way; the executors only decide where it runs: ``local`` in
threads of this process, ``ray`` as Ray tasks on a cluster (``ray_executor``). Both write the
same files into the study directory, so a study started with one can finish with the other.
A cell with ``nproc_per_node > 1`` runs under ``torch.distributed.run`` with the template's
``multi_gpu_train.json`` overlay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from monai_cxr.bundle.generate import clear_run_outputs, cell_dirs, study_cells
from monai_cxr.errors import CxrError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None

__all__ = ["CellOutcome", "RunSummary", "bundle_command", "run_cell", "run_cells"]

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


def bundle_command(cell_dir: Path, python: str | None = None, nproc_per_node: int = 1) -> list[str]:
    """The stock runner's command line for one cell; under torchrun for several processes."""
    python = python or sys.executable
    configs = Path(cell_dir) / "configs"
    if nproc_per_node <= 1:
        return [python, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json")]
    files = [str(configs / "train.json"), str(configs / "multi_gpu_train.json")]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc_per_node)}",
            "-m", "monai.bundle", "run", "--config_file", repr(files)]


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


@dataclass
class CellOutcome:
    """How one ``run_cell`` ended: ``status`` is finished, failed, skipped or busy."""

    name: str
    status: str
    returncode: int | None = None
    log: str = ""
    result: str = ""
    host: str = ""


def run_cell(cell_dir: str | os.PathLike, threads: int = 1, nproc_per_node: int = 1,
             on_start=None) -> CellOutcome:
    """Run one cell in its own process (blocking) unless it is finished or locked by another run.

    Args:
        cell_dir: the cell's bundle folder.
        threads: ``OMP_NUM_THREADS`` of the cell's process(es), unless the environment sets it.
        nproc_per_node: processes of a DistributedDataParallel cell (one per GPU).
        on_start: called with the ``Popen`` once started (so a caller can terminate it).
    """
    import platform

    cell_dir = Path(cell_dir)
    host = platform.node()
    fd = _lock(cell_dir)
    if fd is None:
        return CellOutcome(cell_dir.name, "busy", host=host)
    try:
        if (cell_dir / "run.json").is_file():  # finished by another run meanwhile
            return CellOutcome(cell_dir.name, "skipped", host=host)
        clear_run_outputs(cell_dir)  # leftovers of an interrupted run
        log = cell_dir / LOG_NAME
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(threads))))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "w") as out:
            proc = subprocess.Popen(bundle_command(cell_dir, nproc_per_node=nproc_per_node), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cell_dir, env=env,
                                    pass_fds=(fd,))
        try:
            if on_start is not None:
                on_start(proc)
            returncode = proc.wait()
        except BaseException:  # interrupted (Ctrl-C, a cancelled Ray task): stop the cell too
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    finally:
        os.close(fd)
    if returncode == 0 and (cell_dir / "run.json").is_file():
        return CellOutcome(cell_dir.name, "finished", 0, str(log), _result_line(cell_dir), host)
    return CellOutcome(cell_dir.name, "failed", returncode, str(log), host=host)


def _local_outcomes(cell_paths: list[Path], jobs: int, nproc_per_node: int):
    """Run the cells ``jobs`` at a time in threads of this process; yield outcomes as they end."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // (jobs * nproc_per_node))
    procs, guard = set(), threading.Lock()

    def started(proc):
        with guard:
            procs.add(proc)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(run_cell, path, threads, nproc_per_node, started) for path in cell_paths}
        while futures:
            done, futures = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        with guard:
            running = [p for p in procs if p.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        pool.shutdown(wait=True)


EXECUTORS = ("local", "ray")


def run_cells(study_dir: str | os.PathLike, jobs: int | None = 1, echo=print, progress: bool = True,
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
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise CxrError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if nproc_per_node < 1:
        raise CxrError(f"--nproc-per-node {nproc_per_node} must be at least 1")
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
    if executor == "local":
        jobs = max(1, int(jobs or 1))
    if jobs != 1:  # largest first, so that the last cells to finish are short ones (cost ~ R^2)
        pending.sort(key=lambda name: -_resolution(root / name))
    paths = [root / name for name in pending]
    if executor == "ray":
        from monai_cxr.bundle.ray_executor import ray_outcomes

        outcomes = ray_outcomes(paths, jobs=jobs, address=address, gpus_per_cell=gpus_per_cell,
                                cpus_per_cell=cpus_per_cell, nproc_per_node=nproc_per_node, echo=echo)
    else:
        outcomes = _local_outcomes(paths, jobs, nproc_per_node)
    bar = tqdm(total=len(pending), unit="cell", desc="cells", disable=None if progress and pending else True,
               dynamic_ncols=True)
    try:
        for outcome in outcomes:
            getattr(summary, outcome.status).append(outcome.name)
            if outcome.status == "finished":
                bar.write(f"done    {outcome.name}: {outcome.result}")
            elif outcome.status == "failed":
                bar.write(f"FAILED  {outcome.name} (exit {outcome.returncode}); log: {outcome.log}")
            elif outcome.status == "busy":
                bar.write(f"busy    {outcome.name}: another process is running it")
            bar.update()
    finally:
        outcomes.close()
        bar.close()
    parts = [f"{len(summary.finished)} finished", f"{len(summary.skipped)} skipped"]
    if summary.failed:
        parts.append(f"{len(summary.failed)} failed")
    if summary.busy:
        parts.append(f"{len(summary.busy)} running elsewhere")
    echo("cells: " + ", ".join(parts))
    return summary
