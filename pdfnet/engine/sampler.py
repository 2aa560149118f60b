"""An epoch-seeded sampler that can start in the middle of an epoch (exact resume) and shards across ranks."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    """Indices of one epoch for one rank.

    The epoch's order is a permutation seeded by (seed, epoch), identical on every rank; it is padded by repeating
    its head to a multiple of ``world_size`` (as ``DistributedSampler``) and rank r takes positions r, r+W, ...
    ``set_epoch(epoch, skip)`` starts the next iteration after the rank's first ``skip`` indices, so a run resumed
    mid-epoch sees exactly the samples the interrupted run had not seen yet. ``with_epoch=True`` yields
    ``(epoch, index)`` pairs, for datasets whose items depend on the epoch and live in persistent loader workers.
    """

    def __init__(self, length: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 with_epoch: bool = False) -> None:
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0
        self.with_epoch = with_epoch

    @property
    def per_rank(self) -> int:
        return math.ceil(self.length / self.world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.per_rank:
            raise ValueError(f"skip must be in [0, {self.per_rank}], got {skip}")
        self.epoch, self.skip = epoch, skip

    def epoch_indices(self) -> list[int]:
        """This rank's full index list of the current epoch (before skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = self.epoch_indices()[self.skip:]
        if self.with_epoch:
            return iter([(self.epoch, i) for i in indices])
        return iter(indices)

    def __len__(self) -> int:
        return self.per_rank - self.skip
