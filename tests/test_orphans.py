"""Child processes die with their parent: a SIGKILLed run leaves no training process and no held lock."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import TINY_GRID

from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.studydir import lock_cell

pytestmark = pytest.mark.slow  # runs cells in subprocesses: left out of `make test-fast`

CLI = [sys.executable, "-c", "from monai_cxr.cli import main; main()"]
PATIENCE = 120  # seconds: a bound for a shared, loaded machine, not a speed target


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended: only its exit status is left)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def processes_running(needle: str, cwd: Path | None = None) -> list[int]:
    """Live processes whose command line contains ``needle`` (and that run in ``cwd``, when given)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            try:
                here = cwd is None or Path(os.readlink(f"/proc/{entry}/cwd")) == cwd
            except OSError:
                continue
            if needle in cmdline and here and alive(int(entry)):
                out.append(int(entry))
    return out


def wait_for(condition, what: str):
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.1)


def lock_free(cell) -> bool:
    """Whether a rerun could take the cell's lock now."""
    fd = lock_cell(cell)
    if fd is None:
        return False
    os.close(fd)
    return True


def test_sigkill_of_the_runner_ends_the_cell_and_its_detached_grandchildren(tmp_path):
    """A cell under torchrun: its workers run in sessions of their own, so the parent's group is not enough."""
    cell = tmp_path / "cell"
    cell.mkdir()
    runner = tmp_path / "runner.py"
    runner.write_text(
        textwrap.dedent(f"""
        import sys
        from monai_cxr.run import cell as cell_module

        worker = "import os, time; open({str(cell / "worker.pid")!r}, 'w').write(str(os.getpid())); time.sleep(600)"
        launcher = f'''
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {{worker!r}}], start_new_session=True)  # as torchrun starts workers
        open({str(cell / "launcher.pid")!r}, "w").write(str(os.getpid()))
        time.sleep(600)
        '''
        command = [sys.executable, "-c", launcher.replace("\\n        ", "\\n")]
        cell_module.bundle_command = lambda *args, **kwargs: command
        cell_module.run_cell({str(cell)!r})
    """)
    )
    proc = subprocess.Popen([sys.executable, str(runner)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    wait_for(lambda: (cell / "worker.pid").is_file() and (cell / "launcher.pid").is_file(), "the cell to start")
    pids = [int((cell / name).read_text()) for name in ("launcher.pid", "worker.pid")]
    assert all(alive(pid) for pid in pids)
    assert not lock_free(cell)  # held while the cell runs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in pids), "the cell's processes to end")
    wait_for(lambda: lock_free(cell), "the lock to be released")  # a rerun can take the cell


def test_sigkill_of_monai_cxr_run_ends_the_training_and_frees_the_lock(study_copy):
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    needle, where = "monai.bundle", cell.resolve()  # a cell runs the stock runner in its own folder
    proc = subprocess.Popen(
        [*CLI, "run", "--study-dir", str(study_copy)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: processes_running(needle, where), "the training process to start")
    os.kill(proc.pid, signal.SIGKILL)  # only the runner: its children are not signalled by anyone else
    proc.wait()
    wait_for(lambda: not processes_running(needle, where), "the training process to end")
    wait_for(lambda: lock_free(cell), "the lock to be released")
    assert not (cell / "run.json").exists()  # it was stopped, not left to finish as an orphan
