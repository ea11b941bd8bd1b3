"""Subsample epochs: each epoch a fresh, seeded, optionally class-balanced draw of the training fold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["SubsampleSampler"]


class SubsampleSampler(Sampler):
    """Indices of one epoch: ``num_samples`` drawn afresh each epoch, or all of them shuffled.

    Sabottke & Spieler train on "subsample epochs" without defining them; here a subsample
    epoch is ``num_samples`` images drawn at random from the training fold, and with
    ``balanced`` the draw is stratified: every image belongs to one group, each group gets an
    equal share (``num_samples // G``, the remainder to the last groups), drawn without
    replacement when the group has enough images, with replacement otherwise.

    - One label (a binary cell): the groups are the positives and the negatives, so an epoch
      is half positive, half negative.
    - k labels (a multi-label cell, ``labels`` of shape (N, k), -1 for unknown): an image
      belongs to its rarest positive label (the one with the fewest positive training
      images; ties to the first), an image positive for none to the negative group, so the
      groups are the k labels and "no finding". Every label's positives are then represented
      in each epoch at least ``num_samples / (k + 1)`` times, however rare the label; a
      common label gets more through images that it shares with rarer ones. Empty groups
      are left out.

    Without ``balanced`` (or with ``num_samples=0``, ordinary full epochs) every image is
    equally likely. Epoch ``e`` uses the random stream seeded by ``(seed, e)``, so a run is
    reproducible, and its state is the count of epochs drawn (``state_dict``, for a resumed run).

    With ``batch_size`` it is a batch sampler (``DataLoader(batch_sampler=...)``): the same epoch, cut into
    numpy arrays of ``batch_size`` indices, the last incomplete batch dropped. A batch's indices then reach
    ``CacheBatchDataset.__getitems__`` as one array, with no Python int per image on the way (the DataLoader's
    own ``BatchSampler`` builds a list of ints per batch: at 32 px that cost more than reading the batch).

    Under ``DistributedDataParallel`` every rank draws the same epoch (same seed) and takes
    the disjoint share ``rank::num_replicas`` of it, cut to an equal length so that every rank
    runs the same number of steps (as ``DistributedSampler`` with ``drop_last``).

    Args:
        labels: per training item, in dataset order, its 0/1 label or its k labels (1, 0 or -1).
        num_samples: images per epoch; 0 for the whole fold.
        balanced: draw the groups in equal numbers.
        seed: base seed of the draws.
        num_replicas: processes sharing the epoch [default: the world size when
            ``torch.distributed`` is initialised, else 1].
        rank: this process's share [default: its rank, else 0].
        batch_size: 0 for single indices (a sampler), else arrays of that many (a batch sampler).
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_samples: int = 0,
        balanced: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        batch_size: int = 0,
    ) -> None:

        labels = np.asarray(labels).astype(int)
        self.labels = labels.reshape(len(labels), -1)
        self.num_samples = int(num_samples)
        self.balanced = bool(balanced)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.epoch = 0
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = int(
            num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        )
        self.rank = int(rank if rank is not None else dist.get_rank() if distributed else 0)
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        self.groups = self._groups()
        if self.balanced and self.num_samples and len(self.groups) < 2:
            raise ValueError("a class-balanced subsample needs both positive and negative training images")

    def _groups(self) -> list[np.ndarray]:
        """The strata of a balanced draw (see the class docstring), non-empty ones only, in order."""
        positive = self.labels == 1
        if self.labels.shape[1] == 1:
            groups = [np.flatnonzero(positive[:, 0]), np.flatnonzero(~positive[:, 0])]
        else:
            counts = positive.sum(0)
            order = np.argsort(counts, kind="stable")  # rarest label first
            rarest = np.where(positive.any(1), order[np.argmax(positive[:, order], axis=1)], -1)
            groups = [np.flatnonzero(rarest == j) for j in range(self.labels.shape[1])]
            groups.append(np.flatnonzero(rarest == -1))
        return [g for g in groups if len(g)]

    def _per_rank(self) -> int:
        return (self.num_samples or len(self.labels)) // self.num_replicas

    def __len__(self) -> int:
        """Indices per epoch and rank, or with ``batch_size`` whole batches."""
        return self._per_rank() // self.batch_size if self.batch_size else self._per_rank()

    def draw(self, epoch: int) -> np.ndarray:
        """The indices of epoch ``epoch`` (0-based)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.labels)
        if not self.num_samples:
            return rng.permutation(n)
        if not self.balanced:
            return rng.choice(n, self.num_samples, replace=n < self.num_samples)
        count = len(self.groups)
        shares = [self.num_samples // count + (g >= count - self.num_samples % count) for g in range(count)]
        picked = np.concatenate([rng.choice(group, k, replace=len(group) < k) for group, k in zip(self.groups, shares)])
        return rng.permutation(picked)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[int] | Iterator[np.ndarray]:
        """The next epoch, drawn on the first ``next`` (a DataLoader with workers calls ``iter`` twice on its
        first epoch and takes the second)."""
        indices = self.draw(self.epoch)[self.rank :: self.num_replicas][: self._per_rank()]
        self.epoch += 1
        if not self.batch_size:
            yield from indices.tolist()
            return
        batches = len(indices) // self.batch_size
        yield from indices[: batches * self.batch_size].reshape(batches, self.batch_size)
