"""What every evaluation protocol is to the training callback and eval.py (`SampleEvaluator`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from ganforge.sampling import NoiseSampler, describe, rank_range


class Generates(Protocol):
    """What an evaluator needs of a model: GANLitModule, or a checkpoint's model."""

    latent_dim: int
    num_classes: int | None

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor: ...


class SampleEvaluator(ABC):
    """An evaluation protocol: what the training callback and eval.py call, whatever it measures.

    `evaluate` draws this rank's share of `metrics.num_samples` from the one seeded sampler
    (`ganforge.sampling`), so the samples, and the numbers, are the same on any device, batch size
    or number of ranks; subclasses say what to do with them (`reset`, `update`, `compute`).
    """

    primary: str  # the metric whose best (lowest) value is tracked (val/<primary>_best) and checkpointed

    def __init__(self, settings: Mapping[str, Any], protocol: dict[str, Any]) -> None:
        self.num_samples = settings["num_samples"]
        self.batch_size = settings["batch_size"]
        self.seed = settings["seed"]
        self.protocol = protocol | {
            "generated samples": self.num_samples,
            "noise": describe(self.seed),
        }

    @abstractmethod
    def reset(self) -> None:
        """Forget the generated samples of the last evaluation."""

    @abstractmethod
    def update(self, samples: Tensor, labels: Tensor | None) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Every metric, from all ranks' samples (a collective under DDP: every rank calls it)."""

    @torch.no_grad()
    def evaluate(
        self, model: Generates, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> dict[str, float]:
        self.reset()
        sampler = NoiseSampler(model.latent_dim, self.seed, model.num_classes)
        indices = rank_range(self.num_samples, rank, world_size)
        for z, labels in sampler.batches(indices, self.batch_size, device):
            self.update(model.generate(z, labels), labels)
        return self.compute()
