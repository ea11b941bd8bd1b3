"""A cell as 2-process DistributedDataParallel (gloo on CPU) through `monai-cxr run --nproc-per-node 2`."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_GRID, make_hand_study

from monai_cxr.cell.sampling import SubsampleSampler
from monai_cxr.cli import main
from monai_cxr.grid.generate import GridSettings, generate

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


def test_two_gloo_processes_train_one_cell_and_rank_0_writes_the_contract(tmp_path, capsys):
    study = make_hand_study(tmp_path / "study", {"Mass": lambda i: i % 2}, n_patients=12, resolutions=(16,))
    split = pd.read_csv(study / "data" / "split.csv", dtype=str)
    split.loc[split["patient_id"].isin(["pat002", "pat006", "pat010"]), "fold"] = "test"  # 6 images: 3 per rank
    split.to_csv(study / "data" / "split.csv", index=False)
    (cell,) = generate(study, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    main(["run", "--study-dir", str(study), "--nproc-per-node", "2"])
    assert "1 finished" in capsys.readouterr().out

    run = json.loads((cell / "run.json").read_text())
    assert run["world_size"] == 2 and run["device"] == "cpu"
    # both ranks trained: each epoch is the whole subsample, split between them
    assert run["train_images"] == TINY_GRID["epochs"] * TINY_GRID["subsample"]
    assert run["iterations"] == TINY_GRID["epochs"] * TINY_GRID["subsample"] // TINY_GRID["batch_size"]
    assert 0 <= run["best_val_auc"] <= 1 and run["best_val_auc_se"] >= 0

    # the selected checkpoint's scores gathered from both ranks: one row per val and test image, in datalist order
    predictions = pd.read_csv(cell / "predictions.csv", dtype={"image_id": str, "patient_id": str})
    assert list(predictions.columns) == ["image_id", "patient_id", "fold", "label", "score"]
    datalist = json.loads((cell / "datalist.json").read_text())
    items = [(item, fold) for key, fold in (("validation", "val"), ("test", "test")) for item in datalist[key]]
    assert predictions["image_id"].tolist() == [item["image_id"] for item, _ in items]
    assert predictions["patient_id"].tolist() == [item["patient_id"] for item, _ in items]
    assert predictions["fold"].tolist() == [fold for _, fold in items] and len(datalist["test"]) == 6
    assert predictions["score"].between(0, 1).all() and set(predictions["label"]) == {0, 1}

    # the checkpoint is the bare network (no DDP "module." prefix), loadable by evaluate.json
    state = torch.load(cell / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state and not any(key.startswith("module.") for key in state)
    # only rank 0 logged: one process wrote the TensorBoard event files, one the progress lines
    pids = {path.name.rsplit(".", 2)[1] for path in (cell / "logs").glob("events.out.tfevents.*")}
    assert len(pids) == 1 and pids != {str(__import__("os").getpid())}
    log = (cell / "logs" / "run.log").read_text()
    assert log.count("epoch 2/2: train_loss ") == 1 and log.count("epoch 2/2: val_auc ") == 1


def test_distributed_subsample_shares_are_disjoint_equal_and_the_single_process_epoch():
    labels = [1] * 7 + [0] * 30
    whole = SubsampleSampler(labels, num_samples=21, seed=3)
    shares = [SubsampleSampler(labels, num_samples=21, seed=3, num_replicas=3, rank=r) for r in range(3)]
    for epoch in range(2):
        epoch_draw = whole.draw(epoch)
        drawn = [list(share) for share in shares]
        assert [len(d) for d in drawn] == [7, 7, 7] == [len(s) for s in shares]
        # each rank its own positions of the same seeded epoch: together exactly that epoch
        assert sorted(np.concatenate(drawn)) == sorted(epoch_draw)
        assert all(d == epoch_draw[r::3].tolist() for r, d in enumerate(drawn))
        assert sum(labels[i] for d in drawn for i in d) == 10  # class balance kept over the ranks
    uneven = [list(SubsampleSampler(labels, num_samples=9, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert len(uneven[0]) == len(uneven[1]) == 4  # 9 // 2 each: every rank runs the same steps


def test_handlers_that_write_are_off_on_other_ranks_by_their_own_condition():
    """Each writing handler of train.json carries `_disabled_: $@rank > 0`; the overlay only sets `rank`."""
    from monai_cxr.grid.generate import template_dir

    configs = template_dir() / "configs"
    train = json.loads((configs / "train.json").read_text())
    overlay = json.loads((configs / "multi_gpu_train.json").read_text())
    assert (train["rank"], train["world_size"]) == (0, 1)
    assert overlay["rank"] == "$int(os.environ['RANK'])" and overlay["world_size"] == "$int(os.environ['WORLD_SIZE'])"
    assert not [key for key in overlay if "handlers" in key]  # nothing by list position

    def rank_0_only(section):
        return sorted(
            h["_target_"].rsplit(".", 1)[-1] for h in train[section]["handlers"] if h.get("_disabled_") == "$@rank > 0"
        )

    assert rank_0_only("train") == ["RunRecorder", "TensorBoardStatsHandler", "TrainingLog"]
    assert rank_0_only("validate") == ["CheckpointSaver", "TensorBoardStatsHandler"]
    # every rank runs the rest: the AUC and the predictions are gathered over all ranks
    assert rank_0_only("score") == []
    recorder = next(h for h in train["train"]["handlers"] if h["_target_"].endswith("RunRecorder"))
    assert recorder["world_size"] == "@world_size"
