"""A prompt order that a resumed run draws as the uninterrupted run did, in every epoch.

TRL's ``RepeatSampler`` (the prompt order of GRPOTrainer and RLOOTrainer) seeds one ``torch.Generator`` when
it is built and draws a new permutation from it each time an epoch starts: epoch ``e`` gets the
``e + 1``-th permutation of that stream. A run resumed in epoch ``e`` builds a fresh sampler, whose first
permutation is epoch 0's, so from the second epoch on it trains on another order than the run it resumes
(transformers' Trainer restores the global RNG states, not a sampler's own generator).

:class:`EpochSampler` wraps TRL's sampler and takes the epoch from ``set_epoch`` (which transformers'
Trainer calls at the start of every epoch, through accelerate's data loader, resumed or not): before each
pass it reseeds the generator and draws the ``e`` permutations before, so that pass ``e`` is the same
permutation whether the run started at epoch 0 or resumed at ``e``, and the same as TRL's own order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """TRL's ``RepeatSampler`` with its generator's position restored from the epoch.

    ``sampler`` must have TRL's ``RepeatSampler`` attributes ``shuffle``, ``seed``, ``generator`` and
    ``num_samples``; without shuffling or a seed it is passed through unchanged (nothing to restore).
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass belongs to (called by the trainer at the start of every epoch)."""
        self.epoch = int(epoch)

    def _restore_generator(self) -> None:
        sampler = self.sampler
        if self.epoch is None or not getattr(sampler, "shuffle", False) or sampler.seed is None:
            return
        sampler.generator.manual_seed(sampler.seed)
        for _ in range(self.epoch):  # the permutations of the epochs before this one
            torch.randperm(sampler.num_samples, generator=sampler.generator)

    def __iter__(self) -> Iterator[int]:
        self._restore_generator()
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
