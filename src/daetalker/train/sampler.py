"""A deterministic, resumable, rank-sharded sampler that never ends.

Epoch e is a permutation of the dataset drawn from ``seed + e``; each epoch is
padded to a multiple of the world size (as DistributedSampler does) and rank r
takes positions r, r + W, r + 2W, ... The stream runs over epoch boundaries,
so batch k of every rank is fully determined by k: a trainer resumes by
starting the stream at ``start = steps_done * per_rank_batch``. Across ranks,
batch k covers exactly the single-process global batch k (when the dataset
length divides by W), which keeps DDP and one-process runs comparable.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableShardedSampler(Sampler[int]):
    def __init__(
        self, dataset_len: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, start: int = 0
    ) -> None:
        if dataset_len < 1:
            raise ValueError("cannot sample from an empty dataset")
        assert 0 <= rank < world_size and start >= 0
        self.n = dataset_len
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start = start  # per-rank samples already consumed
        self.per_rank = -(-dataset_len // world_size)  # ceil: epoch padded to a multiple of W

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's share of epoch ``epoch``."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        padded = (perm * self.world_size)[: self.per_rank * self.world_size]  # wrap-around padding
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            yield from self.epoch_indices(epoch)[offset:]
            epoch, offset = epoch + 1, 0
