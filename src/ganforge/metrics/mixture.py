"""Mode-collapse metrics on the 2-D Gaussian mixtures, as defined in PacGAN (Lin et al. 2018):
a sample is high quality when it lies within 3 standard deviations of its nearest mode; a mode is
covered when it receives at least `min_mode_samples` high-quality samples; reverse KL compares the
modes' share of high-quality samples with the (uniform) true distribution, KL(generated || true).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ganforge.metrics.base import SampleEvaluator


def mode_counts(samples: Tensor, modes: Tensor, std: float) -> tuple[Tensor, int]:
    """High-quality samples per mode, and the number of samples."""
    distance, nearest = torch.cdist(samples.float(), modes.to(samples.device)).min(dim=1)
    high_quality = distance <= 3 * std
    return torch.bincount(nearest[high_quality], minlength=len(modes)).double(), len(samples)


def mixture_metrics(counts: Tensor, total: int, min_mode_samples: int) -> dict[str, float]:
    hq = counts.sum().item()
    p = counts / max(hq, 1)
    nonzero = p > 0
    reverse_kl = (p[nonzero] * (p[nonzero] * len(counts)).log()).sum().item() if hq else math.inf
    return {
        "modes_covered": float((counts >= min_mode_samples).sum()),
        "high_quality": 100.0 * hq / total,
        "reverse_kl": reverse_kl,
    }


class ModeCounts(Metric):
    """High-quality samples per mode, and all samples (summed over DDP ranks)."""

    full_state_update = False

    def __init__(self, modes: Tensor, std: float) -> None:
        super().__init__()
        self.std = std
        self.register_buffer("modes", modes.float())
        self.add_state("counts", torch.zeros(len(modes), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        counts, total = mode_counts(samples, self.modes, self.std)
        self.counts += counts
        self.total += total

    def compute(self) -> tuple[Tensor, Tensor]:
        return self.counts, self.total


class MixtureEvaluator(SampleEvaluator):
    primary = "reverse_kl"

    def __init__(self, settings: Mapping[str, Any], modes: Tensor, std: float) -> None:
        self.min_mode_samples = settings["mixture_min_mode_samples"]
        super().__init__(
            settings,
            {
                "metric": "PacGAN mode metrics (high quality: within 3 std of the nearest mode)",
                "modes": len(modes),
                "mode std": std,
                "covered when": f">= {self.min_mode_samples} high-quality samples",
            },
        )
        self.counts = ModeCounts(modes, std)

    def to(self, device: torch.device) -> MixtureEvaluator:
        self.counts.to(device)
        return self

    def reset(self) -> None:
        self.counts.reset()

    def update(self, samples: Tensor, labels: Tensor | None) -> None:
        self.counts.update(samples)

    def compute(self) -> dict[str, float]:
        counts, total = self.counts.compute()
        return mixture_metrics(counts.cpu(), int(total.item()), self.min_mode_samples)
