"""Fully connected G and D for low-dimensional points (the 2-D mixture benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as sn


def _layers(dims: Sequence[int], activation: type[nn.Module], spectral_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for d_in, d_out in pairwise(dims[:-1]):
        linear = nn.Linear(d_in, d_out)
        layers += [sn(linear) if spectral_norm else linear, activation()]
    last = nn.Linear(dims[-2], dims[-1])
    return [*layers, sn(last) if spectral_norm else last]


class PointGenerator(nn.Module):
    def __init__(
        self, dim: int = 2, latent_dim: int = 2, hidden_dims: Sequence[int] = (128, 128, 128)
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(*_layers([latent_dim, *hidden_dims, dim], nn.ReLU, spectral_norm=False))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PointDiscriminator(nn.Module):
    def __init__(
        self, dim: int = 2, hidden_dims: Sequence[int] = (128, 128, 128), spectral_norm: bool = False
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(*_layers([dim, *hidden_dims, 1], nn.LeakyReLU, spectral_norm))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)
