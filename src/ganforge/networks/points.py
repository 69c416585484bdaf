"""Fully connected G and D for low-dimensional points (the 2-D mixture benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from ganforge.errors import GanforgeError


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
    """`pack` > 1: PacGAN (Lin et al. 2018) — D judges `pack` samples at once, concatenated, so a
    generator that repeats itself is easy to spot; outputs one score per pack (batch / pack)."""

    def __init__(
        self,
        dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        spectral_norm: bool = False,
        pack: int = 1,
    ) -> None:
        super().__init__()
        if pack < 1:
            raise GanforgeError(f"model.discriminator.pack must be >= 1 (1: no packing), got {pack}")
        self.pack = pack
        self.net = nn.Sequential(*_layers([dim * pack, *hidden_dims, 1], nn.LeakyReLU, spectral_norm))

    def forward(self, x: Tensor) -> Tensor:
        if len(x) % self.pack:
            raise GanforgeError(
                f"PacGAN packs {self.pack} samples per discriminator input, but a batch has {len(x)}; "
                f"make data.batch_size a multiple of {self.pack}"
            )
        return self.net(x.reshape(len(x) // self.pack, -1)).squeeze(1)
