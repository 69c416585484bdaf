"""DCGAN (Radford et al. 2016): strided (transposed) convolutions, batch norm, DCGAN initialisation.

Depth follows the image size: a 4x4 projection of the noise, then one stride-2 layer per doubling,
so 32x32 has three up-sampling layers and 64x64 four (the paper's network at base_channels=64).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

from ganforge.errors import GanforgeError

VALID_SIZES = tuple(2**k for k in range(3, 11))  # 8 ... 1024


def num_doublings(image_size: int, model: str = "dcgan") -> int:
    """Number of doublings between 4x4 and `image_size`; rejects sizes these networks cannot build."""
    if image_size not in VALID_SIZES:
        sizes = ", ".join(map(str, VALID_SIZES))
        raise GanforgeError(
            f"{model} cannot build {image_size}x{image_size} images: data.image_size must be a power of two "
            f"in {{{sizes}}} (e.g. data.image_size=64)"
        )
    return int(math.log2(image_size)) - 2


def _widths(image_size: int, base_channels: int, max_channels: int) -> list[int]:
    """Channel widths from the 4x4 stage outwards, halving at each doubling (G order)."""
    n = num_doublings(image_size)
    return [min(base_channels * 2 ** (n - 1 - i), max_channels) for i in range(n)]


def dcgan_init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0 (the paper's initialisation)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and num_classes < 2:
        raise GanforgeError(
            f"model.num_classes must be >= 2 for a conditional model (or null), got {num_classes}"
        )


class DCGANGenerator(nn.Module):
    """`num_classes` set: class-conditional (cDCGAN, Mirza & Osindero 2014), a learned class embedding
    of `embed_dim` concatenated to the noise."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int = 100,
        base_channels: int = 64,
        max_channels: int = 512,
        num_classes: int | None = None,
        embed_dim: int = 50,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        widths = _widths(image_size, base_channels, max_channels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(
                latent_dim + (embed_dim if num_classes else 0), widths[0], 4, 1, 0, bias=False
            ),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in pairwise(widths):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


NORMS = ("batch", "layer", "none")


def _norm(kind: str, channels: int) -> list[nn.Module]:
    """Batch norm (the paper); layer norm or none for gradient penalties, which need per-sample outputs."""
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":
        return [nn.GroupNorm(1, channels)]
    return []


class DCGANDiscriminator(nn.Module):
    """`num_classes` set: a projection discriminator (Miyato & Koyama 2018): the unconditional output
    plus the inner product of a class embedding with the sum-pooled last features."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        base_channels: int = 64,
        max_channels: int = 512,
        norm: str = "batch",
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        if norm not in NORMS:
            raise GanforgeError(
                f"model.discriminator.norm={norm!r} is unknown; use one of {', '.join(NORMS)}"
            )
        widths = _widths(image_size, base_channels, max_channels)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for w_in, w_out in pairwise(widths):
            conv = nn.Conv2d(w_in, w_out, 4, 2, 1, bias=norm == "none")
            layers += [conv, *_norm(norm, w_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.embed = nn.Embedding(num_classes, widths[-1]) if num_classes else None
        self.apply(dcgan_init)
        if self.embed is not None:  # Xavier, as in the projection discriminator's reference code
            nn.init.xavier_uniform_(self.embed.weight)
        if spectral_norm:  # Miyato et al. 2018: every layer's largest singular value kept at 1
            for module in [*self.net, self.embed]:
                if isinstance(module, nn.Conv2d | nn.Embedding):
                    nn.utils.parametrizations.spectral_norm(module)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is None:
            return self.net(x).flatten()
        h = self.net[:-1](x)
        projection = (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return self.net[-1](h).flatten() + projection
