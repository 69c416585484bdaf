"""A shuffle that a resumed run repeats exactly.

The order of epoch `e` is a function of `(seed, e)` alone: it never draws from the global RNG (so
training noise and data order do not disturb each other) and it does not depend on how often a run
was stopped. Its state (epoch, indices handed out) goes into checkpoints through torchdata's
`StatefulDataLoader`, which Lightning saves and restores; a mid-epoch resume skips the indices
already used without loading their images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self.yielded = 0  # indices of the current epoch handed to the loader so far
        self._resume_at = 0
        self._epoch_set = False

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self._epoch_set = True
        if epoch != self.epoch:
            self.epoch, self._resume_at = epoch, 0

    def order(self, epoch: int) -> torch.Tensor:
        (state,) = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(int(state)))

    def __iter__(self) -> Iterator[int]:
        start, self._resume_at = self._resume_at, 0
        self.yielded = start
        for index in self.order(self.epoch)[start:].tolist():
            self.yielded += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "yielded": self.yielded, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The loader applies this at its next `iter()`, after Lightning's `set_epoch`: when the loop
        has moved to a later epoch (the checkpoint was taken at an epoch's last batch), the stored
        position belongs to a finished epoch and the new one starts from its first index."""
        self.seed = state["seed"]
        if self._epoch_set and state["epoch"] != self.epoch:
            return
        self.epoch = state["epoch"]
        self._resume_at = state["yielded"] if state["yielded"] < self.num_samples else 0


class WeightedEpochDraw(EpochShuffle):
    """`EpochShuffle`'s resumable epochs, each `len(weights)` indices drawn with replacement in
    proportion to `weights` (e.g. 1 / class count: class-balanced batches from a long-tailed set)."""

    def __init__(self, weights: torch.Tensor, seed: int) -> None:
        super().__init__(len(weights), seed)
        self.weights = weights.double()

    def order(self, epoch: int) -> torch.Tensor:
        (state,) = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)
        generator = torch.Generator().manual_seed(int(state))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
