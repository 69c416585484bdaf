"""The one seeded sampler: sample i's noise and class depend on the seed only, not on how samples
are batched, on which device, or how they are split over ranks; evaluation numbers follow."""

from __future__ import annotations

import pytest
import torch

from ganforge.metrics.mixture import MixtureEvaluator
from ganforge.sampling import BLOCK, NoiseSampler, rank_range
from tests.conftest import tiny_module


def drawn(sampler: NoiseSampler, indices: range, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    parts = list(sampler.batches(indices, batch_size))
    labels = [y for _, y in parts]
    return torch.cat([z for z, _ in parts]), (None if labels[0] is None else torch.cat(labels))


def test_the_same_noise_for_any_batch_size_and_across_blocks() -> None:
    sampler = NoiseSampler(latent_dim=3, seed=7, num_classes=10)
    every = range(2 * BLOCK + 5)  # three blocks, the last one partial
    z, y = drawn(sampler, every, 2 * BLOCK + 5)
    for batch_size in (1000, 97, BLOCK):
        assert torch.equal(drawn(sampler, every, batch_size)[0], z)
    assert torch.equal(y, torch.arange(len(every)) % 10)  # balanced classes, by index
    window = range(BLOCK - 3, BLOCK + 4)  # a slice across a block boundary is the same rows
    assert torch.equal(sampler.noise(window), z[BLOCK - 3 : BLOCK + 4])
    assert z.shape == (len(every), 3) and z.dtype == torch.float32
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05  # N(0, I)


def test_ranks_draw_disjoint_slices_of_one_stream() -> None:
    sampler = NoiseSampler(latent_dim=4, seed=0, num_classes=3)
    z, y = drawn(sampler, range(1001), 250)
    parts = [drawn(sampler, rank_range(1001, rank, 3), 64) for rank in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), z)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_seeds_and_labels() -> None:
    a, b = NoiseSampler(2, seed=0), NoiseSampler(2, seed=1)
    assert not torch.equal(a.noise(range(10)), b.noise(range(10)))
    assert drawn(a, range(10), 4)[1] is None  # unconditional: no labels
    asked = torch.tensor([2, 2, 0, 1])
    assert torch.equal(drawn_with(a, asked), asked)
    with pytest.raises(ValueError, match="3 labels for 4 samples"):
        list(a.batches(range(4), 2, labels=asked[:3]))


def drawn_with(sampler: NoiseSampler, labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([y for _, y in sampler.batches(range(len(labels)), 3, labels=labels)])


def test_grid_noise_comes_from_the_sampler() -> None:
    module = tiny_module(num_fixed_samples=9, fixed_noise_seed=3)
    assert torch.equal(module.fixed_noise, NoiseSampler(3, 3).noise(range(9)))


def test_evaluation_is_the_same_for_any_batch_size() -> None:
    modes = torch.tensor([[0.0, 0.0], [5.0, 5.0]])

    class Identity:  # "generates" its noise: the metric sees the sampler's draws directly
        latent_dim, num_classes = 2, None

        def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
            return z

    def evaluate(batch_size: int) -> dict[str, float]:
        settings = {"num_samples": 999, "batch_size": batch_size, "seed": 4, "mixture_min_mode_samples": 1}
        return MixtureEvaluator(settings, modes, std=1.0).evaluate(Identity(), torch.device("cpu"))

    first = evaluate(999)
    assert first["high_quality"] > 90  # nearly all within 3 std of the mode at the origin
    assert evaluate(10) == first and evaluate(128) == first
