"""The one way evaluation, export and sample grids draw a generator's inputs.

Sample `i` of a seed always gets the same noise vector and the same class, whatever the device, the
batch size, or how the samples are split over DDP ranks: the noise comes in fixed blocks of
`BLOCK` rows, each drawn on the CPU from its own generator seeded by (seed, block index). So a metric
measured on a GPU with batch 500 sees exactly the images it saw on a CPU with batch 64, and an
export can be re-made, or extended, image for image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK = 4096


def block_seed(seed: int, block: int) -> int:
    digest = hashlib.blake2b(f"ganforge-noise:{seed}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are signed 64-bit


def rank_range(total: int, rank: int, world_size: int) -> range:
    """The consecutive sample indices rank `rank` draws of `total` (the ranks' ranges tile 0..total)."""
    start = rank * (total // world_size) + min(rank, total % world_size)
    return range(start, start + total // world_size + (rank < total % world_size))


@dataclass(frozen=True)
class NoiseSampler:
    latent_dim: int
    seed: int
    num_classes: int | None = None  # conditional models: sample i asks for class i mod num_classes

    def noise(self, indices: range) -> Tensor:
        """Noise rows `indices` (step 1), float32 on the CPU."""
        parts = [z for z, _ in self.batches(indices, BLOCK)]
        return torch.cat(parts) if parts else torch.zeros(0, self.latent_dim)

    def batches(
        self,
        indices: range,
        batch_size: int,
        device: torch.device | str = "cpu",
        labels: Tensor | None = None,
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """(noise, labels) for `indices` in batches of `batch_size`, on `device`. `labels`, one per
        index, replace the balanced default (class i mod num_classes) of conditional models."""
        if indices.step != 1:
            raise ValueError("indices must be consecutive")
        if labels is None and self.num_classes is not None:
            labels = torch.arange(indices.start, indices.stop) % self.num_classes
        if labels is not None and len(labels) != len(indices):
            raise ValueError(f"{len(labels)} labels for {len(indices)} samples")
        cached: tuple[int, Tensor] | None = None
        for start in range(indices.start, indices.stop, batch_size):
            stop = min(start + batch_size, indices.stop)
            pending = []
            i = start
            while i < stop:  # the batch may span blocks
                block, offset = divmod(i, BLOCK)
                if cached is None or cached[0] != block:
                    cached = (block, self._block(block))
                take = min(stop - i, BLOCK - offset)
                pending.append(cached[1][offset : offset + take])
                i += take
            z = torch.cat(pending).to(device)
            y = None if labels is None else labels[start - indices.start : stop - indices.start].to(device)
            yield z, y

    def _block(self, block: int) -> Tensor:
        generator = torch.Generator().manual_seed(block_seed(self.seed, block))
        return torch.randn(BLOCK, self.latent_dim, generator=generator)


def describe(seed: int) -> str:
    """For protocols: enough to draw the same samples again."""
    return (
        f"N(0, I), seed {seed}, drawn on the CPU in blocks of {BLOCK} (the same on any device, batch "
        "size or number of ranks); conditional models: sample i asks for class i mod classes"
    )
