"""Subsample epochs: fresh, seeded, class-balanced draws; full epochs as an option."""

import numpy as np
import pytest

from monai_cxr.cell.sampling import SubsampleSampler

LABELS = [1] * 10 + [0] * 90


def test_balanced_subsample_has_both_classes_in_halves():
    sampler = SubsampleSampler(LABELS, num_samples=40, seed=0)
    epoch = list(sampler)
    assert len(epoch) == len(sampler) == 40
    assert sum(LABELS[i] for i in epoch) == 20  # only 10 positives: drawn with replacement
    assert len({i for i in epoch if LABELS[i] == 0}) == 20  # 90 negatives: without replacement


def test_each_epoch_is_a_fresh_draw_and_the_seed_reproduces_it():
    a, b = SubsampleSampler(LABELS, 40, seed=3), SubsampleSampler(LABELS, 40, seed=3)
    first, second = list(a), list(a)
    assert first != second
    assert [first, second] == [list(b), list(b)]
    assert list(SubsampleSampler(LABELS, 40, seed=4)) != first


def test_full_epochs_visit_every_item_once():
    epoch = list(SubsampleSampler(LABELS, num_samples=0, seed=0))
    assert sorted(epoch) == list(range(len(LABELS)))


def test_unbalanced_subsample_follows_the_prevalence_roughly():
    draws = np.concatenate([SubsampleSampler(LABELS, 50, balanced=False, seed=0).draw(e) for e in range(20)])
    assert 0.03 < np.mean(np.asarray(LABELS)[draws]) < 0.2


def test_one_class_cannot_be_balanced():
    with pytest.raises(ValueError, match="both positive and negative"):
        SubsampleSampler([0] * 10, num_samples=4)


def test_batch_mode_yields_the_same_epoch_as_arrays_of_whole_batches():
    single, batched = SubsampleSampler(LABELS, 42, seed=5), SubsampleSampler(LABELS, 42, seed=5, batch_size=8)
    for _ in range(2):  # each epoch a fresh draw, the same in both modes
        epoch, batches = list(single), list(batched)
        assert len(batches) == len(batched) == 5  # 42 // 8: the incomplete batch is dropped, as drop_last
        assert all(isinstance(b, np.ndarray) and b.shape == (8,) for b in batches)
        assert np.concatenate(batches).tolist() == epoch[:40]
    assert batched.state_dict() == {"epoch": 2}


def test_batch_mode_splits_each_ranks_share():
    shares = [SubsampleSampler(LABELS, 40, seed=1, num_replicas=2, rank=r, batch_size=6) for r in range(2)]
    whole = SubsampleSampler(LABELS, 40, seed=1).draw(0)
    for rank, share in enumerate(shares):
        batches = list(share)
        assert len(batches) == len(share) == 3  # 20 per rank // 6
        assert np.concatenate(batches).tolist() == whole[rank::2][:18].tolist()


def test_negative_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size must be >= 0, got -1"):
        SubsampleSampler(LABELS, 40, batch_size=-1)
