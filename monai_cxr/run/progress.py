"""The study's progress while cells run: cells done of all, time elapsed, and an ETA.

A cell's cost is estimated as resolution² x training images (epochs x images per epoch):
a convolution network's work grows with the pixels it sees. The ETA divides the cost still
to run by the rate the finished cells achieved, so it improves as cells finish.
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
        values = json.loads((cell_dir / "configs" / "override.json").read_text())  # the cell's own settings
        resolution, epochs, subsample = int(values["resolution"]), int(values["epochs"]), int(values["subsample"])
        if not subsample:  # full epochs: the cell's training fold
            subsample = len(json.loads((cell_dir / "datalist.json").read_text())["training"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return float(resolution * resolution * epochs * max(1, subsample))


class StudyProgress:
    """Counts cells as they end and says where the study stands, e.g. ``[3/8] elapsed 2 min 10 s, ETA 5 min 20 s``.

    With ``slots`` (cells run at a time, started in ``costs``' order as slots free up, as the
    local executor does) each cell's start is known, so the rate is cost per slot-second of
    the finished cells, and the work already done on the running cells counts: with two jobs,
    the big cell that started with the first is nearly done when the first ends. Without
    ``slots`` (Ray filling a cluster) the rate is the cost finished per second of the run.

    Args:
        costs: the estimated cost of every cell this run will run, by name, in start order.
        total: the cells of the whole grid (finished ones included).
        done: cells of the grid finished before this run.
        slots: cells run at a time, if known.
        clock: seconds, monotonic (a parameter so tests need not wait).
    """

    def __init__(
        self,
        costs: dict[str, float],
        total: int,
        done: int = 0,
        slots: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.costs = dict(costs)
        self.total = total
        self.done = done
        self.slots = slots
        self.clock = clock
        self.start = clock()
        self.cost_done = 0.0
        self.timed_cost = 0.0  # cost and slot-seconds of the finished cells whose start is known
        self.timed_seconds = 0.0
        self.queue = list(self.costs)
        self.started: dict[str, float] = {}
        self._fill(self.start)

    def _fill(self, now: float) -> None:
        while self.slots and len(self.started) < self.slots and self.queue:
            self.started[self.queue.pop(0)] = now

    def finish(self, name: str, ok: bool = True) -> None:
        """Count ``name`` as ended (``ok``: it finished; a failed or busy cell only leaves the work left)."""
        now = self.clock()
        cost = self.costs.pop(name, 0.0)
        began = self.started.pop(name, None)
        if name in self.queue:
            self.queue.remove(name)
        self.done += 1
        if ok:
            self.cost_done += cost
            if began is not None and now > began:
                self.timed_cost += cost
                self.timed_seconds += now - began
        self._fill(now)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float | None:
        """Seconds left; None before any finished cell gives a rate."""
        if not self.costs:
            return 0.0
        now = self.clock()
        if self.slots and self.timed_cost > 0:
            rate = self.timed_cost / self.timed_seconds  # cost per slot-second
            left = sum(
                max(0.0, cost - rate * (now - self.started[name])) if name in self.started else cost
                for name, cost in self.costs.items()
            )
            return left / (rate * min(self.slots, len(self.costs)))
        elapsed = now - self.start
        if self.cost_done <= 0 or elapsed <= 0:
            return None
        return sum(self.costs.values()) / (self.cost_done / elapsed)

    def status(self) -> str:
        """``[done/total] elapsed E, ETA T`` (the ETA only while cells are left)."""
        text = f"[{self.done}/{self.total}] elapsed {format_duration(self.elapsed)}"
        if self.costs:
            text += f", ETA {format_duration(self.eta())}"
        return text
