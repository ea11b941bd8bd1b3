"""Whole-batch reads from the resize cache and device-side preprocessing (monai_cxr.cell.batches)."""

import math
import pickle

import numpy as np
import pytest
import torch
from monai.data import DataLoader as MonaiDataLoader
from monai.transforms import Affine, NormalizeIntensity, NormalizeIntensityd
from torch.utils.data import DataLoader

from monai_cxr.cell.batches import (
    CacheBatchDataset,
    DevicePreprocess,
    LossAverage,
    affine_theta,
    affine_warp,
    collate_batch,
    normalize_images,
)
from monai_cxr.cell.sampling import SubsampleSampler
from monai_cxr.errors import CxrError

N, R = 60, 24


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A uint8 cache with one flat image (row 5), and a datalist whose rows are shuffled."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, R, R), dtype=np.uint8)
    images[5] = 77
    path = tmp_path_factory.mktemp("cache") / f"r{R}.npy"
    np.save(path, images)
    rows = rng.permutation(N)[:50]
    data = [
        {"image": int(r), "label": [int(r % 3 == 0)], "image_id": f"img{r}", "patient_id": f"pat{r // 2}"} for r in rows
    ]
    return str(path), data


def old_path(cache_file):
    """The template's former per-sample path: a cache row as 1 x R x R float32, then ``NormalizeIntensity``."""
    cache = np.load(cache_file, mmap_mode="r")
    return lambda item: {"image": NormalizeIntensity()(cache[int(item["image"])][None].astype(np.float32))}


@pytest.mark.parametrize("sort_reads", [False, True])
def test_a_batch_equals_the_per_sample_monai_path_in_the_order_asked(cache, sort_reads):
    cache_file, data = cache
    ds = CacheBatchDataset(cache_file, data, sort_reads=sort_reads)
    indices = [7, 3, 41, 0, 3, 19]  # unsorted, with a repeat
    batch = ds.__getitems__(indices)
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (6, 1, R, R)
    assert batch["label"].dtype == torch.float32 and batch["label"].shape == (6, 1)
    assert batch["image_id"] == [data[i]["image_id"] for i in indices]
    assert batch["patient_id"] == [data[i]["patient_id"] for i in indices]
    images, labels = DevicePreprocess()(batch, torch.device("cpu"))
    old = old_path(cache_file)
    for k, i in enumerate(indices):
        expected = old(data[i])
        np.testing.assert_allclose(images[k].numpy(), np.asarray(expected["image"]), atol=1e-5)
        assert labels[k].tolist() == [float(data[i]["label"][0])]


def test_a_flat_image_normalises_to_zeros_and_others_match_monai(cache):
    cache_file, data = cache
    flat = next(i for i, item in enumerate(data) if item["image"] == 5)
    images, _ = DevicePreprocess()(CacheBatchDataset(cache_file, data)[[flat, 0]])
    assert torch.equal(images[0], torch.zeros_like(images[0]))
    floats = torch.randn(3, 2, 5, 7) * 4 + 1
    expected = [NormalizeIntensityd("x")({"x": f.clone()})["x"] for f in floats]
    np.testing.assert_allclose(normalize_images(floats).numpy(), torch.stack(expected).numpy(), atol=1e-6)


def test_normalisation_is_accurate_on_large_images_in_any_memory_layout():
    images = torch.randint(0, 256, (2, 1, 300, 300), dtype=torch.uint8)
    images[1] = images[1] // 16 + 100  # low contrast, far from zero
    d = images.double()
    truth = (d - d.mean(dim=(1, 2, 3), keepdim=True)) / d.std(dim=(1, 2, 3), correction=0, keepdim=True)
    np.testing.assert_allclose(normalize_images(images).numpy(), truth.numpy(), atol=2e-6)
    transposed = images.transpose(2, 3)  # not contiguous
    assert torch.equal(normalize_images(transposed), normalize_images(transposed.contiguous()))


def test_single_items_and_the_default_collate_still_work(cache):
    cache_file, data = cache
    ds = CacheBatchDataset(cache_file, data)
    item = ds[4]
    assert item["image"].shape == (1, R, R) and item["image_id"] == data[4]["image_id"]
    batch = collate_batch([ds[4], ds[9]])
    assert torch.equal(batch["image"], ds[[4, 9]]["image"]) and batch["image_id"] == ds[[4, 9]]["image_id"]


def test_the_dataset_pickles_without_its_memory_map(cache):
    ds = CacheBatchDataset(*cache)
    first = ds[[1, 2]]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache is None
    assert torch.equal(clone[[1, 2]]["image"], first["image"])


def epochs(loader, n):
    return [[b for b in loader] for _ in range(n)]


@pytest.mark.parametrize("batch_sampler", [False, True], ids=["sampler", "batch_sampler"])
@pytest.mark.parametrize("loader_class", [DataLoader, MonaiDataLoader])
def test_workers_and_the_subsample_sampler_give_the_samplers_own_epochs(cache, loader_class, batch_sampler):
    """As a sampler (the DataLoader batches it) or as the template's batch sampler (arrays of indices)."""
    cache_file, data = cache
    labels = [item["label"][0] for item in data]
    ds = CacheBatchDataset(cache_file, data)

    def run(num_workers):
        workers = {"num_workers": num_workers, "persistent_workers": num_workers > 0, "collate_fn": collate_batch}
        if batch_sampler:
            sampler = SubsampleSampler(labels, num_samples=40, seed=3, num_replicas=2, rank=1, batch_size=6)
            return epochs(loader_class(ds, batch_sampler=sampler, **workers), 2)
        sampler = SubsampleSampler(labels, num_samples=40, seed=3, num_replicas=2, rank=1)
        return epochs(loader_class(ds, sampler=sampler, batch_size=6, drop_last=True, **workers), 2)

    serial, parallel = run(0), run(2)
    reference = SubsampleSampler(labels, num_samples=40, seed=3, num_replicas=2, rank=1)
    for a, b in zip(serial, parallel):
        expected = list(reference)  # this rank's share of the next epoch, drawn by the sampler alone
        assert len(a) == len(b) == len(expected) // 6
        got = [image_id for batch in a for image_id in batch["image_id"]]
        assert got == [data[i]["image_id"] for i in expected[: len(got)]]
        for x, y in zip(a, b):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
            assert x["image_id"] == y["image_id"]
    assert serial[0][0]["image_id"] != serial[1][0]["image_id"]  # a fresh draw each epoch


def test_training_batches_can_leave_the_ids_out(cache):
    cache_file, data = cache
    with_ids, without = (
        CacheBatchDataset(cache_file, data)[[3, 1]],
        CacheBatchDataset(cache_file, data, with_ids=False)[[3, 1]],
    )
    assert set(with_ids) == {"image", "label", "image_id", "patient_id"} and set(without) == {"image", "label"}
    assert torch.equal(with_ids["image"], without["image"]) and torch.equal(with_ids["label"], without["label"])


def test_sequential_validation_keeps_the_datalist_order_and_the_last_partial_batch(cache):
    cache_file, data = cache
    loader = MonaiDataLoader(
        CacheBatchDataset(cache_file, data), batch_size=16, shuffle=False, collate_fn=collate_batch
    )
    batches = list(loader)
    assert [len(b["image_id"]) for b in batches] == [16, 16, 16, 2]
    assert [i for b in batches for i in b["image_id"]] == [item["image_id"] for item in data]


def batch_of(cache, n=8):
    cache_file, data = cache
    return CacheBatchDataset(cache_file, data)[list(range(n))]


def test_augmentation_prob_0_is_identity_and_prob_1_changes_every_image(cache):
    batch = batch_of(cache)
    plain, _ = DevicePreprocess()(batch)
    same, _ = DevicePreprocess(augment_prob=0.0, seed=1)(batch)
    assert torch.equal(plain, same)
    changed, _ = DevicePreprocess(augment_prob=1.0, seed=1)(batch)
    assert all(not torch.allclose(changed[k], plain[k], atol=1e-3) for k in range(len(plain)))


def test_the_same_seed_gives_the_same_augmentation(cache):
    batch = batch_of(cache)
    options = {"augment_prob": 0.5, "flip_prob": 0.5, "brightness": 0.1, "contrast": 0.1}
    a, b, c = (DevicePreprocess(**options, seed=s) for s in (7, 7, 8))
    first = [a(batch)[0] for _ in range(2)]
    assert not torch.equal(first[0], first[1])  # the stream moves on
    assert all(torch.equal(x, b(batch)[0]) for x in first)
    assert not torch.equal(first[0], c(batch)[0])


def test_only_the_drawn_images_are_warped(cache):
    batch = batch_of(cache, 16)
    plain, _ = DevicePreprocess()(batch)
    out, _ = DevicePreprocess(augment_prob=0.5, seed=0)(batch)
    same = [torch.equal(out[k], plain[k]) for k in range(16)]
    assert 0 < sum(same) < 16


def test_a_fixed_draw_matches_monais_affine(cache):
    batch = batch_of(cache, 3)
    plain, _ = DevicePreprocess()(batch)
    out, _ = DevicePreprocess(augment_prob=1.0, rotate_range=(0.3, 0.3), scale_range=[(0.1, 0.1), (-0.2, -0.2)])(batch)
    expected = Affine(
        rotate_params=0.3, scale_params=(1.1, 0.8), padding_mode="zeros", mode="bilinear", image_only=True
    )
    for k in range(3):
        np.testing.assert_allclose(out[k].numpy(), np.asarray(expected(plain[k])), atol=1e-5)


def test_the_draws_follow_monais_ranges_and_a_bare_scale_number_scales_the_first_axis_only():
    drawn = DevicePreprocess(augment_prob=0.3, scale_range=0.05).draw(2000)
    assert drawn["angle"].abs().max() <= 0.09 and drawn["angle"].abs().max() > 0.08
    assert (drawn["scale"][:, 1] == 1).all() and ((drawn["scale"][:, 0] - 1).abs() <= 0.05).all()
    assert 0.25 < len(drawn["warp"]) / 2000 < 0.35 and len(drawn["flip"]) == 0
    assert (drawn["gain"] == 1).all() and (drawn["shift"] == 0).all()
    iso = DevicePreprocess(scale_range=0.05, isotropic_scale=True).draw(50)["scale"]
    assert torch.equal(iso[:, 0], iso[:, 1]) and (iso[:, 0] != 1).all()
    both = DevicePreprocess(scale_range=(0.05, (0.2, 0.3))).draw(50)["scale"]
    assert ((both[:, 1] >= 1.2) & (both[:, 1] <= 1.3)).all()


def test_a_rotation_moves_a_bright_point_where_expected():
    size, angle = 41, math.pi / 2
    image = torch.zeros(1, 1, size, size)
    centre = (size - 1) // 2
    image[0, 0, centre - 10, centre] = 1.0  # 10 pixels above the centre
    out = affine_warp(image, affine_theta(torch.tensor([angle]), torch.tensor([[1.0, 1.0]]), (size, size)))
    row, col = divmod(int(out.flatten().argmax()), size)
    # output p samples the input at R p, R = [[0, -1], [1, 0]]: the point at q = (-10, 0) lands at R^T q = (0, 10)
    assert (row - centre, col - centre) == (0, 10)
    assert out.max() == pytest.approx(1.0, abs=1e-5)


def test_flip_and_intensity_jitter(cache):
    batch = batch_of(cache, 4)
    plain, _ = DevicePreprocess()(batch)
    flipped, _ = DevicePreprocess(flip_prob=1.0)(batch)
    assert torch.equal(flipped, plain.flip(-1))
    jittered, _ = DevicePreprocess(brightness=0.5, contrast=0.5, seed=2)(batch)
    gain = jittered.std(dim=(1, 2, 3), correction=0)
    assert ((gain > 0.5) & (gain < 1.5)).all() and not torch.allclose(gain, torch.ones(4), atol=1e-3)


def test_engine_to_kwargs_apply_to_the_images(cache):
    images, labels = DevicePreprocess()(batch_of(cache, 2), "cpu", False, memory_format=torch.channels_last)
    assert images.is_contiguous(memory_format=torch.channels_last) and labels.dtype == torch.float32


def test_user_mistakes_get_one_line_errors(cache, tmp_path):
    cache_file, data = cache
    with pytest.raises(CxrError, match="augment_prob must be a probability"):
        DevicePreprocess(augment_prob=1.5)
    with pytest.raises(CxrError, match="rotate_range"):
        DevicePreprocess(rotate_range="wide")
    with pytest.raises(CxrError, match="brightness"):
        DevicePreprocess(brightness=-1)
    missing = CacheBatchDataset(tmp_path / "r24.npy", data)  # a config instantiates without the cache ...
    assert len(missing) == len(data)
    with pytest.raises(CxrError, match="resize cache not found"):  # ... and the first read says what is wrong
        missing[[0]]
    with pytest.raises(CxrError, match=f"row {N} is outside"):
        CacheBatchDataset(cache_file, [{"image": 0, "label": [0]}, {"image": N, "label": [0]}])[[0]]
    np.save(tmp_path / "f.npy", np.zeros((2, 3, 3), np.float32))
    with pytest.raises(CxrError, match="must be uint8"):
        CacheBatchDataset(tmp_path / "f.npy", [{"image": 0, "label": [0]}])[0]


def test_the_trainer_runs_on_cache_batches_and_reports_the_epoch_loss(cache):
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    cache_file, data = cache
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(R * R, 1))
    labels = [item["label"][0] for item in data]
    loader = DataLoader(
        CacheBatchDataset(cache_file, data),
        sampler=SubsampleSampler(labels, 24, seed=0),
        batch_size=8,
        drop_last=True,
        collate_fn=collate_batch,
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=2,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        decollate=False,
        optim_set_to_none=True,
        prepare_batch=DevicePreprocess(augment_prob=0.5),
        train_handlers=[LossAverage()],
    )
    losses, seen = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(e.state.metrics["train_loss"]))
    trainer.run()
    assert len(losses) == 6 and len(seen) == 2
    assert seen == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:])])
