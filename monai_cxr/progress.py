"""Progress shown to people: tqdm bars on a terminal only, and the few formats the lines share.

A bar redraws itself with carriage returns; in a log file or a pipe that is noise, so every
bar of the package is made by :func:`progress_bar`, which shows it only when its stream is an
interactive terminal. Lines that must reach logs too (a finished cell, the ETA) go through
:mod:`logging` instead.
"""

from __future__ import annotations

import math
import sys

from tqdm import tqdm

__all__ = ["format_duration", "format_rate", "progress_bar"]


def progress_bar(iterable=None, *, enabled: bool = True, file=None, **kwargs) -> tqdm:
    """A tqdm bar on ``file`` (default: standard error), drawn only if ``enabled`` and ``file`` is a TTY.

    tqdm's own ``disable=None`` tests the same, but only for the stream it resolves itself;
    testing here keeps the rule in one place for every bar, whatever ``file`` is.
    """
    file = file if file is not None else sys.stderr
    isatty = getattr(file, "isatty", None)
    on_terminal = bool(isatty and isatty())
    return tqdm(iterable, file=file, disable=not (enabled and on_terminal), **kwargs)


def format_duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``; ``"n/a"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "n/a"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_rate(value, unit: str = "img/s") -> str:
    """A rate with three significant digits (``0.42 img/s``, not ``0 img/s``); ``n/a`` when unknown or zero."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return f"n/a {unit}"
    if not math.isfinite(value) or value <= 0:
        return f"n/a {unit}"
    if value >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.3g} {unit}"
