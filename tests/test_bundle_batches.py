"""A generated cell reads uint8 batches from the cache and normalises/augments them in ``prepare_batch``."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_GRID
from monai.transforms import NormalizeIntensity

from monai_cxr.cell.batches import CacheBatchDataset, DevicePreprocess
from monai_cxr.grid.generate import GridSettings, generate

CPU = torch.device("cpu")


def parser_of(cell, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(cell / "configs/train.json"), str(cell / "configs/override.json")])
    parser.update({"bundle_root": str(cell), **overrides})
    return parser


def old_normalisation(cache, rows):
    """The template's former per-sample input: each cache row as float32, then MONAI's NormalizeIntensity."""
    return np.stack([np.asarray(NormalizeIntensity()(cache[r][None].astype(np.float32))) for r in rows])


def rows_of(batch, datalist):
    row = {item["image_id"]: item["image"] for fold in ("training", "validation", "test") for item in datalist[fold]}
    return [row[i] for i in batch["image_id"]]


@pytest.fixture
def cell(study_copy):
    (cell,) = generate(study_copy, GridSettings(labels=["Mass"], resolutions=[16], **TINY_GRID))
    return cell


def test_train_val_and_score_batches_are_uint8_until_prepare_batch_and_then_the_old_normalisation(cell):
    parser = parser_of(cell)
    datalist = json.loads((cell / "datalist.json").read_text())
    cache = np.load(parser.get_parsed_content("cache_file"), mmap_mode="r")
    train_prepare, val_prepare = (parser.get_parsed_content(f"{k}#prepare_batch") for k in ("train", "validate"))
    assert isinstance(train_prepare, DevicePreprocess) and not train_prepare.augments  # augment_prob 0 by default
    seen = {}
    for key, prepare in (("train", train_prepare), ("validate", val_prepare), ("score", val_prepare)):
        loader = parser.get_parsed_content(f"{key}#dataloader")
        assert isinstance(loader.dataset, CacheBatchDataset)
        if key == "train":  # batches of the subsample sampler's epoch 0, without ids (training needs none)
            drawn = [datalist["training"][i]["image"] for i in loader.batch_sampler.draw(0)]
        batches = list(loader)
        seen[key] = (
            sum((len(b["label"]) for b in batches), 0)
            if key == "train"
            else [i for b in batches for i in b["image_id"]]
        )
        for batch in batches:
            image = batch["image"]
            assert image.dtype == torch.uint8 and image.shape == (len(batch["label"]), 1, 16, 16), key
            if key == "train":
                assert set(batch) == {"image", "label"}
                rows, drawn = drawn[: len(image)], drawn[len(image) :]
            else:
                rows = rows_of(batch, datalist)
            assert np.array_equal(image[:, 0].numpy(), cache[rows])
            x, y = prepare(batch, CPU)
            assert x.dtype == torch.float32 and y.dtype == torch.float32 and y.shape == (len(rows), 1)
            np.testing.assert_allclose(x.numpy(), old_normalisation(cache, rows), atol=1e-5, err_msg=key)
    assert seen["train"] == TINY_GRID["subsample"]  # the subsample sampler draws the epoch
    assert seen["validate"] == [item["image_id"] for item in datalist["validation"]]  # datalist order
    assert seen["score"] == [item["image_id"] for item in datalist["validation"] + datalist["test"]]
    folds = [f for b in parser.get_parsed_content("score#dataloader") for f in b["fold"]]  # predictions.csv's fold
    assert folds == ["val"] * len(datalist["validation"]) + ["test"] * len(datalist["test"]) and datalist["test"]


def test_augmentation_is_the_bundles_choice_for_training_only(cell):
    options = {
        "augment_prob": 1.0,
        "rotate_range": 0.2,
        "scale_range": 0.1,
        "flip_prob": 0.5,
        "brightness": 0.1,
        "contrast": 0.2,
        "seed": 3,
    }
    parser = parser_of(cell, **options)
    train, val = parser.get_parsed_content("train#prepare_batch"), parser.get_parsed_content("validate#prepare_batch")
    assert (
        train.augment_prob,
        train.rotate,
        train.scale[0],
        train.flip_prob,
        train.brightness,
        train.contrast,
        train.seed,
    ) == (1.0, (-0.2, 0.2), (-0.1, 0.1), 0.5, 0.1, 0.2, 3)
    assert not val.augments
    batch = next(iter(parser.get_parsed_content("validate#dataloader")))
    plain, _ = val(batch, CPU)
    augmented, _ = train(batch, CPU)
    again, _ = parser_of(cell, **options).get_parsed_content("train#prepare_batch")(batch, CPU)
    assert not torch.allclose(augmented, plain) and torch.equal(augmented, again)  # seeded by the cell's seed
    assert torch.equal(batch["image"], next(iter(parser.get_parsed_content("validate#dataloader")))["image"])


@pytest.mark.slow  # trains a network
def test_the_engines_see_uint8_batches_and_feed_the_network_the_old_normalisation(cell):
    from ignite.engine import Events

    parser = parser_of(cell, epochs=1)
    datalist = json.loads((cell / "datalist.json").read_text())
    cache = np.load(parser.get_parsed_content("cache_file"), mmap_mode="r")
    trainer, evaluator = parser.get_parsed_content("train#trainer"), parser.get_parsed_content("validate#evaluator")
    network = parser.get_parsed_content("network")
    checked = {"trainer": 0, "evaluator": 0}
    inputs = []
    network.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))

    def started(engine):  # before prepare_batch: the loader's batch as it came
        assert engine.state.batch["image"].dtype == torch.uint8
        inputs.clear()

    def completed(name):
        def handler(engine):
            (x,) = inputs  # one forward pass per iteration, on the prepared batch
            batch = engine.state.batch  # training batches carry no ids: their rows are checked in the test above
            images, rows = (
                (cache, rows_of(batch, datalist))
                if "image_id" in batch
                else (batch["image"][:, 0].numpy(), range(len(x)))
            )
            expected = old_normalisation(images, rows)
            np.testing.assert_allclose(x.numpy(), expected, atol=1e-5, err_msg=name)
            checked[name] += 1

        return handler

    for name, engine in (("trainer", trainer), ("evaluator", evaluator)):
        engine.add_event_handler(Events.ITERATION_STARTED, started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, completed(name))
    trainer.run()
    assert checked["trainer"] == TINY_GRID["subsample"] // TINY_GRID["batch_size"]
    assert checked["evaluator"] == -(-len(datalist["validation"]) // TINY_GRID["batch_size"])
