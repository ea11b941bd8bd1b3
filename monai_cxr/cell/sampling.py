"""Subsample epochs: each epoch a fresh, seeded, optionally class-balanced draw of the training fold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["SubsampleSampler"]


class SubsampleSampler(Sampler[int]):
    """Indices of one epoch: ``num_samples`` drawn afresh each epoch, or all of them shuffled.

    Sabottke & Spieler train on "subsample epochs" without defining them; here a subsample
    epoch is ``num_samples`` images drawn at random from the training fold, half positive and
    half negative when ``balanced`` (each class without replacement when it has enough images,
    with replacement otherwise). ``num_samples=0`` gives ordinary full epochs. Epoch ``e`` uses
    the random stream seeded by ``(seed, e)``, so a run is reproducible, and its state is the
    count of epochs drawn (``state_dict``, for a resumed run).

    Under ``DistributedDataParallel`` every rank draws the same epoch (same seed) and takes
    the disjoint share ``rank::num_replicas`` of it, cut to an equal length so that every rank
    runs the same number of steps (as ``DistributedSampler`` with ``drop_last``).

    Args:
        labels: the 0/1 label of each training item, in dataset order.
        num_samples: images per epoch; 0 for the whole fold.
        balanced: draw the two classes in equal numbers.
        seed: base seed of the draws.
        num_replicas: processes sharing the epoch [default: the world size when
            ``torch.distributed`` is initialised, else 1].
        rank: this process's share [default: its rank, else 0].
    """

    def __init__(self, labels: Sequence[int], num_samples: int = 0, balanced: bool = True, seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None) -> None:

        self.labels = np.asarray(labels).astype(int).ravel()
        self.num_samples = int(num_samples)
        self.balanced = bool(balanced)
        self.seed = int(seed)
        self.epoch = 0
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = int(num_replicas if num_replicas is not None else
                                dist.get_world_size() if distributed else 1)
        self.rank = int(rank if rank is not None else dist.get_rank() if distributed else 0)
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        if self.balanced and self.num_samples and len(np.unique(self.labels)) < 2:
            raise ValueError("a class-balanced subsample needs both positive and negative training images")

    def __len__(self) -> int:
        return (self.num_samples or len(self.labels)) // self.num_replicas

    def draw(self, epoch: int) -> np.ndarray:
        """The indices of epoch ``epoch`` (0-based)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.labels)
        if not self.num_samples:
            return rng.permutation(n)
        if not self.balanced:
            return rng.choice(n, self.num_samples, replace=n < self.num_samples)
        pos, neg = np.flatnonzero(self.labels == 1), np.flatnonzero(self.labels != 1)
        n_pos = self.num_samples // 2
        n_neg = self.num_samples - n_pos
        picked = np.concatenate([
            rng.choice(pos, n_pos, replace=len(pos) < n_pos),
            rng.choice(neg, n_neg, replace=len(neg) < n_neg),
        ])
        return rng.permutation(picked)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[int]:
        indices = self.draw(self.epoch)[self.rank::self.num_replicas][:len(self)]
        self.epoch += 1
        return iter(indices.tolist())
