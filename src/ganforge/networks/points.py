"""Fully connected G and D for low-dimensional points (the 2-D mixture benchmarks)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as sn

from ganforge.errors import GanforgeError


class Maxout(nn.Module):
    """Maxout (Goodfellow et al. 2013): the max over `pieces` groups of units, PacGAN's critic unit."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (-1, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def _mlp(
    dims: Sequence[int],
    activation: Callable[[], nn.Module],
    spectral_norm: bool = False,
    batch_norm: bool = False,
    widen: int = 1,
) -> nn.Sequential:
    """Linear layers from dims[0] to dims[-1]. A hidden layer has `widen` times its units (for maxout's
    pieces) and is optionally batch-normalised before its activation."""

    def linear(d_in: int, d_out: int) -> nn.Module:
        layer = nn.Linear(d_in, d_out)
        return sn(layer) if spectral_norm else layer

    layers: list[nn.Module] = []
    for d_in, d_out in pairwise(dims[:-1]):
        layers.append(linear(d_in, d_out * widen))
        if batch_norm:
            layers.append(nn.BatchNorm1d(d_out * widen))
        layers.append(activation())
    return nn.Sequential(*layers, linear(dims[-2], dims[-1]))


class PointGenerator(nn.Module):
    """`batch_norm`: batch norm before each hidden ReLU (PacGAN's and VEEGAN's 2-D generator)."""

    def __init__(
        self,
        dim: int = 2,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp([latent_dim, *hidden_dims, dim], nn.ReLU, batch_norm=batch_norm)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class PointDiscriminator(nn.Module):
    """`pack` > 1: PacGAN (Lin et al. 2018) — D judges `pack` samples at once, concatenated, so a
    generator that repeats itself is easy to spot; outputs one score per pack (batch / pack).
    `maxout` > 1: maxout units of that many pieces instead of LeakyReLU (PacGAN's 2-D critic)."""

    def __init__(
        self,
        dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128, 128),
        spectral_norm: bool = False,
        pack: int = 1,
        maxout: int = 1,
    ) -> None:
        super().__init__()
        if pack < 1:
            raise GanforgeError(f"model.discriminator.pack must be >= 1 (1: no packing), got {pack}")
        if maxout < 1:
            raise GanforgeError(f"model.discriminator.maxout must be >= 1 (1: LeakyReLU units), got {maxout}")
        self.pack = pack
        activation = partial(Maxout, maxout) if maxout > 1 else nn.LeakyReLU
        self.net = _mlp([dim * pack, *hidden_dims, 1], activation, spectral_norm, widen=maxout)

    def forward(self, x: Tensor) -> Tensor:
        if len(x) % self.pack:
            raise GanforgeError(
                f"PacGAN packs {self.pack} samples per discriminator input, but a batch has {len(x)}; "
                f"make data.batch_size a multiple of {self.pack}"
            )
        return self.net(x.reshape(len(x) // self.pack, -1)).squeeze(1)
