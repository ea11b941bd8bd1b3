"""Progress people can watch: bars only on a terminal, and per cell: done/total, elapsed, ETA, a real img/s."""

import io
import json

import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.grid.generate import generate
from monai_cxr.grid.settings import GridSettings
from monai_cxr.progress import format_duration, format_rate, progress_bar
from monai_cxr.run import executor
from monai_cxr.run.cell import CellOutcome, _result_line
from monai_cxr.run.progress import StudyProgress, cell_cost


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_draws_only_on_a_terminal():
    for stream, drawn in ((io.StringIO(), False), (Terminal(), True)):
        bar = progress_bar(total=3, file=stream, desc="x", mininterval=0)
        for _ in range(3):
            bar.update()
        bar.close()
        assert ("\r" in stream.getvalue()) is drawn
    quiet = Terminal()
    bar = progress_bar(total=3, file=quiet, enabled=False)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_prepare_writes_no_carriage_returns_into_a_pipe(tmp_path, capfd):
    from monai_cxr.data.phantom import synthesize
    from monai_cxr.data.prepare import prepare

    synthesize(tmp_path / "nih", patients=12, size=64, seed=0, prevalence=0.4, workers=1)
    prepare(dataset="nih", data_dir=tmp_path / "nih", study_dir=tmp_path / "s", resolutions=[16], workers=1)
    out, err = capfd.readouterr()
    assert (tmp_path / "s" / "data" / "cache" / "r16.npy").is_file()
    assert "\r" not in out and "\r" not in err


def test_rates_and_durations_never_read_zero_when_unknown():
    assert format_rate(0.42) == "0.42 img/s" and format_rate(12.34) == "12.3 img/s"
    assert format_rate(1530.4) == "1530 img/s"
    assert format_rate(None) == format_rate(0) == format_rate(float("nan")) == "n/a img/s"
    assert [format_duration(s) for s in (42.4, 185, 7620, None)] == ["42 s", "3 min 05 s", "2 h 07 min", "n/a"]


def test_the_result_line_of_a_slow_cell_shows_its_rate(tmp_path):
    run = {"best_val_auc": 0.75, "best_val_auc_se": 0.05, "train_seconds": 900.0}
    for rate, shown in ((0.4, "0.4 img/s"), (None, "n/a img/s")):
        (tmp_path / "run.json").write_text(json.dumps({**run, "images_per_s": rate}))
        line = _result_line(tmp_path)
        assert line.endswith(shown) and "AUC 0.750 ± 0.050" in line


def test_eta_divides_the_cost_left_by_the_cost_done_per_second():
    now = [100.0]
    progress = StudyProgress({"small": 1.0, "big": 4.0, "last": 1.0}, total=4, done=1, clock=lambda: now[0])
    assert progress.status() == "[1/4] elapsed 0 s, ETA n/a"  # nothing finished: no rate yet
    now[0] = 140.0
    progress.finish("big")  # 4 units in 40 s: 2 units left take 20 s
    assert progress.status() == "[2/4] elapsed 40 s, ETA 20 s"
    now[0] = 150.0
    progress.finish("small")
    progress.finish("last")
    assert progress.status() == "[4/4] elapsed 50 s"


def test_with_parallel_jobs_the_eta_counts_the_work_running_cells_have_done():
    # two jobs, largest first: when the first big cell ends, the other big one (started with it) is
    # nearly done and a small one has just started; the cost finished per second of the run would
    # say 18 units at 16 per 100 s = 112 s
    now = [0.0]
    costs = {"big1": 16.0, "big2": 16.0, "small1": 1.0, "small2": 1.0}
    progress = StudyProgress(costs, total=4, slots=2, clock=lambda: now[0])
    now[0] = 100.0
    progress.finish("big1")
    # 0.16 units per slot-second: big2 is done but for 0 units, small1 and small2 have 1 each, on 2 slots
    assert progress.eta() == pytest.approx(2 / (0.16 * 2))
    assert progress.status() == "[1/4] elapsed 1 min 40 s, ETA 6 s"
    now[0] = 104.0
    progress.finish("big2")
    progress.finish("small1", ok=False)  # a failed cell leaves the work left but says nothing of the rate
    assert progress.timed_cost == 32.0 and progress.timed_seconds == 204.0
    assert progress.eta() == pytest.approx(1 / (32 / 204))  # small2 started at 104, one slot busy


def test_a_cells_cost_is_resolution_squared_times_its_training_images(tmp_path):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2}, resolutions=(16, 32))
    small, big = generate(study, GridSettings(labels=["Mass"], resolutions=[16, 32], **TINY_GRID))
    assert cell_cost(small) == 16 * 16 * TINY_GRID["epochs"] * TINY_GRID["subsample"]
    assert cell_cost(big) == 4 * cell_cost(small)
    (full,) = generate(
        study, GridSettings(labels=["Mass"], resolutions=[16], **{**TINY_GRID, "subsample": 0}), force=True
    )
    train = len(json.loads((full / "datalist.json").read_text())["training"])
    assert cell_cost(full) == 16 * 16 * TINY_GRID["epochs"] * train
    assert cell_cost(tmp_path / "nothing") == 1.0


def test_run_reports_each_cell_with_the_study_progress(tmp_path, monkeypatch, log_lines):
    study = make_hand_study(tmp_path / "s", {"Mass": lambda i: i % 2}, resolutions=(16, 32))
    generate(study, GridSettings(labels=["Mass"], resolutions=[16, 32], **TINY_GRID))

    def fake_outcomes(paths, jobs, nproc_per_node):
        for path in paths:
            yield CellOutcome(path.name, "finished", 0, result="AUC 0.700  3 s  n/a img/s")

    monkeypatch.setattr(executor, "local_outcomes", fake_outcomes)
    summary = executor.run_cells(study, progress=True)
    assert summary.finished == ["mass__resnet34__r16__s0", "mass__resnet34__r32__s0"]
    cells = [line for line in log_lines if "done    " in line]
    assert cells[0].startswith("[1/2] elapsed ") and ", ETA " in cells[0]
    assert cells[0].endswith("done    mass__resnet34__r16__s0: AUC 0.700  3 s  n/a img/s")
    assert cells[1].startswith("[2/2] elapsed ") and "ETA" not in cells[1]
