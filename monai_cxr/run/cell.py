"""One cell run by the stock MONAI bundle runner, in its own process, under the cell's lock.

Each cell runs as ``python -m monai.bundle run --config_file "['configs/train.json','configs/override.json']"``
in the cell's folder, in its own process, so a crash, or a ``kill -9`` of the whole study, loses at most the cells that
were running. A cell is finished exactly when its ``run.json`` exists (written last,
atomically). A cell being run holds a lock on ``CELL/.lock`` (inherited by its process), so two
runs of one study never run the same cell. A cell with ``nproc_per_node > 1`` runs under
``torch.distributed.run`` with the template's ``multi_gpu_train.json`` overlay.

A cell killed while training goes on after its last saved epoch when run again: its resume
checkpoint (``models/resume-<fingerprint>.pt``, named by what the cell trains with), the
checkpoint it selected so far and its logs are kept (the log is appended to); its stale
results go. Leftovers of a run of other settings are all removed.

The command runs under :mod:`monai_cxr.run.guard`: whatever ends the run (Ctrl-C, SIGTERM, a
SIGKILL of this process, a cancelled Ray task), the cell's processes, torchrun's workers
included, end with it and release the lock, so a rerun can start at once.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.grid.cells import read_cell
from monai_cxr.grid.generate import clear_run_outputs
from monai_cxr.progress import format_rate
from monai_cxr.run.guard import GRACE
from monai_cxr.studydir import lock_cell, resume_file

__all__ = ["LOG_NAME", "CellOutcome", "bundle_command", "guarded", "lock_cell", "run_cell"]

LOG_NAME = "logs/run.log"


def bundle_command(cell_dir: Path, python: str | None = None, nproc_per_node: int = 1) -> list[str]:
    """The stock runner's command line for one cell, to run with the cell folder as working directory.

    The configs are named relative to the cell and ``bundle_root`` keeps its ``"."``: MONAI does
    not derive it from the config file's location, so the cell folder must be the working
    directory (as here) or be passed as ``--bundle_root``. Relative paths keep the command free
    of the study's location, which may hold characters MONAI rewrites (``#``).
    """
    configs = repr(
        ["configs/train.json", "configs/override.json"]
        + (["configs/multi_gpu_train.json"] if nproc_per_node > 1 else [])
    )
    python = python or sys.executable
    if nproc_per_node <= 1:
        return [python, "-m", "monai.bundle", "run", "--config_file", configs]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={int(nproc_per_node)}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        configs,
    ]


def guarded(command: list[str], python: str | None = None) -> list[str]:
    """``command`` under the guard (:mod:`monai_cxr.run.guard`), which ends with this process."""
    return [python or sys.executable, "-m", "monai_cxr.run.guard", str(os.getpid()), "--", *command]


def cell_resolution(cell_dir: Path) -> int:
    """The cell's input size (0 where its ``cell.json`` cannot be read): larger cells are started first."""
    try:
        return read_cell(cell_dir).resolution
    except CxrError:
        return 0


def _result_line(cell_dir: Path) -> str:
    run = json.loads((cell_dir / "run.json").read_text())
    se = run.get("best_val_auc_se")
    auc = f"AUC {run['best_val_auc']:.3f}" + (f" ± {se:.3f}" if se is not None else "")
    return f"{auc}  {run['train_seconds']:.0f} s  {format_rate(run.get('images_per_s'))}"


# "monai_cxr.errors.CxrError: msg", "ValueError: msg", "[rank1]: RuntimeError: msg" as a traceback ends
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[A-Za-z_][\w.]*\.)?(\w*(?:Error|Exception|Interrupt))): (.+)$")


def failure_reason(log_file: str | os.PathLike, tail_bytes: int = 1 << 16) -> str:
    """The one line that says why a cell failed, from the end of its log: the last ``CxrError`` message (a
    user's mistake, told in one line even when MONAI's config parser wrapped it), else the last exception
    line (``RuntimeError: CUDA out of memory ...``); "" when the log has neither."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    last = ""
    for line in reversed(lines):
        match = _ERROR_LINE.match(line.strip())
        if match is None:
            continue
        if match.group(2) == "CxrError":
            return match.group(3)
        last = last or f"{match.group(2)}: {match.group(3)}"
    return last


@dataclass
class CellOutcome:
    """How one ``run_cell`` ended: ``status`` is finished, failed, skipped or busy; ``reason`` says why it
    failed (:func:`failure_reason`)."""

    name: str
    status: str
    returncode: int | None = None
    log: str = ""
    result: str = ""
    host: str = ""
    reason: str = ""


def run_cell(cell_dir: str | os.PathLike, threads: int = 1, nproc_per_node: int = 1, on_start=None) -> CellOutcome:
    """Run one cell in its own process (blocking) unless it is finished or locked by another run.

    Args:
        cell_dir: the cell's bundle folder.
        threads: ``OMP_NUM_THREADS`` of the cell's process(es), unless the environment sets it.
        nproc_per_node: processes of a DistributedDataParallel cell (one per GPU).
        on_start: called with the ``Popen`` once started (so a caller can terminate it).
    """
    cell_dir = Path(cell_dir)
    host = platform.node()
    fd = lock_cell(cell_dir)
    if fd is None:
        return CellOutcome(cell_dir.name, "busy", host=host)
    try:
        if (cell_dir / "run.json").is_file():  # finished by another run meanwhile
            return CellOutcome(cell_dir.name, "skipped", host=host)
        resume = resume_file(cell_dir, nproc_per_node).is_file()  # an interrupted run of these settings
        clear_run_outputs(cell_dir, resume=resume)  # leftovers of an interrupted run, but what it resumes from
        log = cell_dir / LOG_NAME
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(threads))))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log, "a" if resume else "w") as out:
            proc = subprocess.Popen(
                guarded(bundle_command(cell_dir, nproc_per_node=nproc_per_node)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cell_dir,
                env=env,
                pass_fds=(fd,),
            )
        try:
            if on_start is not None:
                on_start(proc)
            returncode = proc.wait()
        except BaseException:  # interrupted (Ctrl-C, a cancelled Ray task): the guard stops the cell
            proc.terminate()
            try:
                proc.wait(GRACE + 5)
            except subprocess.TimeoutExpired:
                proc.kill()  # the cell's processes get SIGTERM as the guard's death signal
            raise
    finally:
        os.close(fd)
    if returncode == 0 and (cell_dir / "run.json").is_file():
        return CellOutcome(cell_dir.name, "finished", 0, str(log), _result_line(cell_dir), host)
    return CellOutcome(cell_dir.name, "failed", returncode, str(log), host=host, reason=failure_reason(log))
