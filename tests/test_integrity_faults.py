"""Faults of the system explained in one line: a full disk, a read-only study, an unreadable folder."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from nih_layout import write_release
from test_integrity_data import error_line, tree

from monai_cxr import fileio
from monai_cxr.cli import main
from monai_cxr.data import cache as cache_mod
from monai_cxr.data.sources import nih as nih_mod


def _reprepare(study, *extra):
    data_dir = json.loads((study / "study.json").read_text())["data"]["data_dir"]
    return [
        "prepare",
        "--data-dir",
        data_dir,
        "--study-dir",
        str(study),
        "--workers",
        "1",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        *extra,
    ]


def test_too_little_free_space_is_refused_before_anything_changes(study_copy, monkeypatch, capsys):
    before = tree(study_copy)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=50_000))
    with pytest.raises(SystemExit) as exit_info:
        main(_reprepare(study_copy, "--resolutions", "16,32,64"))
    err = error_line(capsys)
    assert exit_info.value.code == 2
    assert "not enough free space for the resize cache" in err and "64 px for" in err
    n = len((study_copy / "data" / "index.csv").read_text().splitlines()) - 1
    assert f"need {(128 + n * 64 * 64) / 1e6:.1f} MB, 0.1 MB available" in err  # of 50,000 bytes free
    assert tree(study_copy) == before  # not even the manifest was touched
    monkeypatch.setattr(shutil, "disk_usage", real)
    main(_reprepare(study_copy, "--resolutions", "16,32,64"))
    assert cache_mod.complete_resolutions(study_copy / "data" / "cache") == [16, 32, 64]


def test_a_disk_that_fills_up_is_one_line_then_the_build_resumes(study_copy, monkeypatch, capsys):
    """The arrays' blocks are allocated before they are memory-mapped: no SIGBUS half-way."""
    allocated = []

    def full(fd, offset, length):
        allocated.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    index_before = (study_copy / "data" / "index.csv").read_bytes()
    study_before = (study_copy / "study.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(_reprepare(study_copy, "--resolutions", "16,32,64"))
    err = error_line(capsys)
    assert exit_info.value.code == 2 and "disk full while allocating" in err and "r64.npy" in err
    assert allocated and not (study_copy / "data" / "cache" / "r64.npy").exists()
    assert (study_copy / "data" / "index.csv").read_bytes() == index_before
    assert (study_copy / "study.json").read_bytes() == study_before
    monkeypatch.undo()
    main(_reprepare(study_copy, "--resolutions", "16,32,64"))
    assert cache_mod.complete_resolutions(study_copy / "data" / "cache") == [16, 32, 64]


def test_a_read_only_study_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    write_release(tmp_path / "nih", patients=20)
    study = tmp_path / "s"
    study.mkdir()
    if os.geteuid() == 0:  # root writes through chmod: make the system refuse the write instead

        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(dir) / ".tmp"))

        monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    else:
        study.chmod(0o555)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(study), "--no-cache"])
    finally:
        study.chmod(0o755)
    err = error_line(capsys)
    assert exit_info.value.code == 1
    assert err.startswith("monai-cxr: error: ") and "Permission denied" in err
    assert str(study) in err
    assert not (study / "study.json").exists() and not list(study.rglob("*.csv"))


def test_an_unreadable_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    write_release(tmp_path / "nih", patients=6)
    images = tmp_path / "nih" / "images"
    real = os.scandir

    def scandir(path="."):
        if Path(path) == images:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(nih_mod.os, "scandir", scandir)
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--data-dir", str(tmp_path / "nih"), "--study-dir", str(tmp_path / "s"), "--no-cache"])
    assert exit_info.value.code == 1
    assert error_line(capsys) == f"monai-cxr: error: {images}: Permission denied\n"
    assert not (tmp_path / "s").exists()


def test_a_failed_write_keeps_the_old_file_and_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    fileio.write_json(target, {"good": 1})

    def half_then_full(tmp):
        tmp.write_text('{"ha')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(fileio.WriteError) as info:
        fileio.atomic_write(target, half_then_full)
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
    written = []

    def second_fails(tmp):
        written.append(tmp)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        tmp.write_text("new")

    with pytest.raises(fileio.WriteError):  # two files: both or neither
        fileio.atomic_writes({tmp_path / "a.csv": second_fails, tmp_path / "b.csv": second_fails})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
