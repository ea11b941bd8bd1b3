"""Atomic file writes: a half-written result never replaces a good one.

A write that the system refuses (a full disk, a read-only folder) raises :class:`WriteError`,
an ``OSError`` whose ``filename`` is the file that was being written (not a temporary name),
so the CLI can say in one line which file could not be written and why.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["WriteError", "atomic_write", "atomic_writes", "write_csv", "write_json", "write_text"]


class WriteError(OSError):
    """Writing ``filename`` failed (``errno``/``strerror`` say why); nothing there was replaced."""


def _named(exc: OSError, path: Path) -> WriteError:
    return WriteError(exc.errno, exc.strerror or str(exc), str(path))


def _stage(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary file beside ``path`` and return it (removed again if ``write`` fails)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _named(exc, path) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        write(tmp)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _named(exc, path) from None
        raise
    return tmp


def atomic_writes(writes: dict[str | os.PathLike, Callable[[Path], None]]) -> list[Path]:
    """Write several files all or none: every temporary file first, then the renames.

    A failure while writing (a full disk, say) leaves every target as it was. The renames
    are atomic each, and within a folder they do not need space, so they do not fail for that.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            staged.append((_stage(path, write), path))
        while staged:
            tmp, path = staged[0]
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _named(exc, path) from None
            staged.pop(0)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [Path(p) for p in writes]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX file systems, so readers see the old file or the new
    one, never a partial one, even if the process is killed mid-write.
    """
    return atomic_writes({path: write})[0]


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV without its index, atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
