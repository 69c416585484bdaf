"""The vanilla fully connected GAN of Goodfellow et al. 2014 (as in the project's source material)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn


def _mlp(dims: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for d_in, d_out in pairwise(dims):
        layers += [nn.Linear(d_in, d_out), nn.LeakyReLU(0.2, inplace=True)]
    return layers


class MLPGenerator(nn.Module):
    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int = 100,
        hidden_dims: Sequence[int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = (channels, image_size, image_size)
        self.net = nn.Sequential(
            *_mlp([latent_dim, *hidden_dims]),
            nn.Linear(hidden_dims[-1], math.prod(self.image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, image_size: int, channels: int, hidden_dims: Sequence[int] = (512, 256)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            *_mlp([channels * image_size * image_size, *hidden_dims]),
            nn.Linear(hidden_dims[-1], 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
