"""The local executor: cells run ``jobs`` at a time as subprocesses of this machine."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from monai_cxr.run.cell import CellOutcome, run_cell

__all__ = ["local_outcomes"]


def local_outcomes(cell_paths: list[Path], jobs: int, nproc_per_node: int) -> Iterator[CellOutcome]:
    """Run the cells ``jobs`` at a time in threads of this process; yield outcomes as they end."""
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
