"""`monai-cxr run --executor ray`: each cell a Ray task writing the study exactly as the local executor."""

import json
import sys

import pandas as pd
import pytest
from conftest import TINY_GRID, make_hand_study

from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate
from monai_cxr.run.cell import bundle_command
from monai_cxr.run.executor import run_cells

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


def tiny(tmp_path):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12, resolutions=(16, 32))
    generate(study, GridSettings(labels=["Mass"], resolutions=[16, 32], **TINY_GRID))
    return study


def test_ray_finishes_a_study_started_locally_and_skips_its_finished_cell(tmp_path, capsys):
    import ray  # the ray extra (pip install monai-cxr[ray]): CI installs it

    study = tiny(tmp_path)
    first, second = (study / "bundles" / f"mass__resnet34__r{r}__s0" for r in (16, 32))
    assert run_cells(study, cells=[first.name], progress=False).finished == [first.name]
    before = {f: (first / f).read_bytes() for f in ("run.json", "predictions.csv")}

    # starts a local Ray on loopback (2 CPUs here), runs the unfinished cell as a task, shuts Ray down
    main(["run", "--study-dir", str(study), "--executor", "ray", "--cpus-per-cell", "1"])
    out = capsys.readouterr().out
    assert "1 of 2 cells already finished" in out and "1 finished, 1 skipped" in out
    assert "ray: 1 cells, 0 GPU and 1 CPU each" in out
    assert not ray.is_initialized()
    assert {f: (first / f).read_bytes() for f in before} == before  # never recomputed
    run = json.loads((second / "run.json").read_text())
    assert (run["label"], run["resolution"], run["world_size"]) == ("Mass", 32, 1)
    predictions = pd.read_csv(second / "predictions.csv", dtype={"image_id": str})
    assert list(predictions.columns) == ["image_id", "patient_id", "fold", "label", "score"]
    assert len(predictions) == len(json.loads((second / "datalist.json").read_text())["validation"])
    assert (second / "logs" / "run.log").is_file() and (second / "models" / "model.pt").is_file()

    # both executors agree the study is done: nothing to run, Ray not even started
    for executor in ("ray", "local"):
        main(["run", "--study-dir", str(study), "--executor", executor])
        assert "0 finished, 2 skipped" in capsys.readouterr().out


def test_ray_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    study = tiny(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--study-dir", str(study), "--executor", "ray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "monai-cxr: error: --executor ray needs Ray: pip install monai-cxr[ray]"
    assert not (study / "bundles" / "mass__resnet34__r16__s0" / "run.json").exists()


def test_ray_options_are_refused_with_the_local_executor(tmp_path, capsys):
    study = tiny(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--study-dir", str(study), "--gpus-per-cell", "1"])
    assert exit_info.value.code == 2 and "--executor ray" in capsys.readouterr().err


def test_a_multi_process_cell_runs_the_stock_runner_under_torchrun(tmp_path):
    cell = tmp_path / "cell"
    command = bundle_command(cell, python="python", nproc_per_node=4)
    assert command[:5] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[5:9] == ["-m", "monai.bundle", "run", "--config_file"]
    # relative to the cell folder, the working directory of the run: the study may move
    assert command[9] == repr(["configs/train.json", "configs/override.json", "configs/multi_gpu_train.json"])
    assert bundle_command(cell, python="python") == [
        "python",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(["configs/train.json", "configs/override.json"]),
    ]


def test_four_quarter_gpu_cells_share_one_gpu_at_the_same_time(tmp_path, monkeypatch, capsys):
    """`--gpus-per-cell 0.25` on a one-GPU Ray: four cells hold a quarter each and run together on GPU 0.

    The GPU is declared to a local Ray (none is needed); each task stands in for run_cell and waits until all
    four have started, which only happens if Ray placed them side by side.
    """
    import ray

    from monai_cxr.run import ray_cluster
    from monai_cxr.run.cell import CellOutcome

    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12)
    generate(study, GridSettings(labels=["Mass"], resolutions=[16], seeds=[0, 1, 2, 3], **TINY_GRID))

    def fake_run_cell(cell_dir, threads=1, nproc_per_node=1):  # pickled by value: runs in a Ray worker
        import os
        import time
        from pathlib import Path

        cell = Path(cell_dir)
        (cell / "started").touch()
        deadline = time.monotonic() + 120  # a bound against hanging, not a speed check
        while len(list(cell.parent.glob("*/started"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        together = len(list(cell.parent.glob("*/started")))
        gpus = ray.get_runtime_context().get_assigned_resources().get("GPU")
        return CellOutcome(
            cell.name,
            "finished",
            result=f"together={together} gpu={gpus} visible={os.environ.get('CUDA_VISIBLE_DEVICES')}",
        )

    monkeypatch.setattr(ray_cluster, "run_cell", fake_run_cell)
    ray.init(
        num_cpus=4,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=ray_cluster.LOCAL_OBJECT_STORE_BYTES,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        main(["run", "--study-dir", str(study), "--executor", "ray", "--gpus-per-cell", "0.25"])
        assert ray.is_initialized()  # the caller's Ray stays up
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert "ray: 4 cells, 0.25 GPU and 1 CPU each (cluster: 4 CPU, 1 GPU)" in out
    assert out.count("together=4 gpu=0.25 visible=0") == 4 and "4 finished, 0 skipped" in out
