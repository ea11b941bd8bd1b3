"""The study's progress while cells run: cells done of all, time elapsed, and an ETA.

A cell's cost is estimated as resolution² x training images (epochs x images per epoch):
a convolution network's work grows with the pixels it sees. The ETA divides the cost still
to run by the cost finished per second so far, so it holds for any number of parallel jobs
and improves as cells finish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from monai_cxr.progress import format_duration

__all__ = ["StudyProgress", "cell_cost"]


def cell_cost(cell_dir: Path) -> float:
    """Resolution² x epochs x training images per epoch of a generated cell; 1.0 where unreadable."""
    cell_dir = Path(cell_dir)
    try:
        resolution = int(json.loads((cell_dir / "cell.json").read_text())["resolution"])
        train = json.loads((cell_dir / "configs" / "train.json").read_text())
        epochs, subsample = int(train["epochs"]), int(train["subsample"])
        if not subsample:  # full epochs: the cell's training fold
            subsample = len(json.loads((cell_dir / "datalist.json").read_text())["training"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return float(resolution * resolution * epochs * max(1, subsample))


class StudyProgress:
    """Counts cells as they end and says where the study stands, e.g. ``[3/8] 2 min 10 s, ETA 5 min 20 s``.

    Args:
        costs: the estimated cost of every cell this run will run, by name.
        total: the cells of the whole grid (finished ones included).
        done: cells of the grid finished before this run.
        clock: seconds, monotonic (a parameter so tests need not wait).
    """

    def __init__(self, costs: dict[str, float], total: int, done: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.costs = dict(costs)
        self.total = total
        self.done = done
        self.clock = clock
        self.start = clock()
        self.cost_done = 0.0
        self.cost_left = float(sum(self.costs.values()))

    def finish(self, name: str) -> None:
        """Count ``name`` (finished, failed or busy: it is no longer work left)."""
        cost = self.costs.pop(name, 0.0)
        self.done += 1
        self.cost_done += cost
        self.cost_left = max(0.0, self.cost_left - cost)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float | None:
        """Seconds left, from the cost finished per second so far; None before any cost is done."""
        if not self.costs:
            return 0.0
        elapsed = self.elapsed
        if self.cost_done <= 0 or elapsed <= 0:
            return None
        return self.cost_left / (self.cost_done / elapsed)

    def status(self) -> str:
        """``[done/total] elapsed E, ETA T`` (the ETA only while cells are left)."""
        text = f"[{self.done}/{self.total}] elapsed {format_duration(self.elapsed)}"
        if self.costs:
            text += f", ETA {format_duration(self.eta())}"
        return text
