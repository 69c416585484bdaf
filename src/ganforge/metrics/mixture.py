"""Mode-collapse metrics on the 2-D Gaussian mixtures, as defined in PacGAN (Lin et al. 2018):
a sample is high quality when it lies within 3 standard deviations of its nearest mode; a mode is
covered when it receives at least `min_mode_samples` high-quality samples; reverse KL compares the
modes' share of high-quality samples with the (uniform) true distribution, KL(generated || true).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def generated(
    generate: Callable[..., Tensor],
    latent_dim: int,
    num_samples: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    num_classes: int | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """`num_samples` generated samples in batches, from noise seeded independently of training's RNG.
    Conditional models (`num_classes`) get `generate(z, labels)` with labels balanced over all samples,
    unconditional ones `generate(z)`."""
    rng = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(n, latent_dim, generator=rng, device=device)
        labels = None if num_classes is None else torch.arange(start, start + n, device=device) % num_classes
        yield (generate(z) if labels is None else generate(z, labels)), labels


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


class MixtureEvaluator:
    primary = "reverse_kl"

    def __init__(self, modes: Tensor, std: float, min_mode_samples: int, num_samples: int) -> None:
        self.modes, self.std, self.min_mode_samples = modes, std, min_mode_samples
        self.protocol = {
            "metric": "PacGAN mode metrics (high quality: within 3 std of the nearest mode)",
            "generated samples": num_samples,
            "modes": len(modes),
            "mode std": std,
            "covered when": f">= {min_mode_samples} high-quality samples",
        }

    @torch.no_grad()
    def evaluate(
        self,
        generate: Callable[..., Tensor],
        latent_dim: int,
        num_samples: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        num_classes: int | None = None,
    ) -> dict[str, float]:
        counts = torch.zeros(len(self.modes), dtype=torch.float64, device=device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        batches = generated(generate, latent_dim, num_samples, batch_size, seed, device, num_classes)
        for samples, _ in batches:
            c, t = mode_counts(samples, self.modes, self.std)
            counts += c
            total += t
        if dist.is_available() and dist.is_initialized():  # every rank's share counts once
            dist.all_reduce(counts)
            dist.all_reduce(total)
        return mixture_metrics(counts.cpu(), int(total.item()), self.min_mode_samples)

    @classmethod
    def build(cls, settings: dict[str, Any], datamodule: Any) -> MixtureEvaluator:
        return cls(
            datamodule.modes, datamodule.std, settings["mixture_min_mode_samples"], settings["num_samples"]
        )
