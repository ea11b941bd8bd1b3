"""A cell's guard: no process of a cell outlives the run that started it.

``run_cell`` starts every cell as ``python -m monai_cxr.run.guard PARENT_PID -- COMMAND...``.
The guard (standard library only, so it starts in milliseconds):

- asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``) and then
  checks that its parent is still ``PARENT_PID``, so a parent that died in between is seen too;
- makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process orphaned below it
  (torchrun's workers, which torchrun starts in sessions of their own; DataLoader workers)
  is re-parented to the guard, not to init, and stays findable;
- starts COMMAND with SIGTERM as its own parent-death signal (so it goes even if the guard
  itself is killed with SIGKILL; torchrun forwards SIGTERM to its workers);
- when COMMAND ends, and on SIGTERM, SIGINT or SIGHUP (Ctrl-C, a cancelled Ray task, the
  death of the parent), sends SIGTERM to every process below it, SIGKILL to those still
  there after :data:`GRACE` seconds, reaps them, and exits with COMMAND's status (128 + the
  signal's number when it was stopped).

It inherits the cell's lock (``CELL/.lock``) and passes it on to COMMAND, so the lock is free
exactly when no process of the cell is left. Without ``prctl`` (not Linux) the guard still
runs COMMAND and stops it on those signals, but a SIGKILL of the parent orphans it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

__all__ = ["GRACE", "descendants", "main"]

GRACE = 10.0  # seconds between SIGTERM and SIGKILL
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where the system has no prctl (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _die_with_parent() -> None:
    """``preexec_fn`` of COMMAND: SIGTERM when the guard dies (safe: the guard has one thread)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _parents() -> dict[int, int]:
    """``{pid: parent pid}`` of the live (non-zombie) processes, from /proc."""
    out = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != b"Z":
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (children, their children, ...)."""
    parents = _parents()
    below, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return below


def _reap() -> None:
    """Collect every child that has ended (orphans re-parented here included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def stop_all(grace: float = GRACE) -> None:
    """SIGTERM to every process below this one, SIGKILL after ``grace`` seconds; reap them all."""
    deadline, told = time.monotonic() + grace, set()
    while True:
        _reap()
        left = descendants(os.getpid())
        if not left:
            return
        late = time.monotonic() > deadline
        for pid in left:
            if late:
                _signal(pid, signal.SIGKILL)
            elif pid not in told:
                _signal(pid, signal.SIGTERM)
                told.add(pid)
        time.sleep(0.05)


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum, frame):
    raise _Stop(signum)


def main(argv: list[str] | None = None) -> int:
    """``guard PARENT_PID -- COMMAND...``: run COMMAND; leave no process behind; return its status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m monai_cxr.run.guard PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    for signum in _SIGNALS:
        signal.signal(signum, _raise_stop)
    code = 0
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            return 128 + signal.SIGTERM
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        # close_fds=False: COMMAND keeps the lock; preexec_fn is safe, the guard has one thread
        child = subprocess.Popen(command, close_fds=False, preexec_fn=_die_with_parent)
        while True:
            pid, status = os.waitpid(-1, 0)  # also reaps orphans re-parented here
            if pid == child.pid:
                code = os.waitstatus_to_exitcode(status)
                child.returncode = code  # reaped here, not by Popen
                code = 128 - code if code < 0 else code
                break
    except _Stop as stop:
        code = 128 + stop.signum
    except ChildProcessError:
        code = 1
    finally:
        for signum in _SIGNALS:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        stop_all()
    return code


if __name__ == "__main__":
    sys.exit(main())
