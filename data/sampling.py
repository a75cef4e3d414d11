"""Shuffling whose order is a function of (seed, epoch) alone.

A DataLoader with ``shuffle=True`` draws each epoch's permutation from the global RNG when
its iterator is created, so a run resumed from a checkpoint sees other batches than an
uninterrupted one. Lightning calls ``set_epoch`` on a sampler that has it at the start of
every epoch (before the iterator exists), which makes the order reproducible on resume.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """A fresh permutation of ``range(n)`` per epoch, seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n
