"""Networks build from (image_size, channels), produce the right shapes, and reject what they can't build."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.networks.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.networks.mlp import MLPDiscriminator, MLPGenerator
from ganforge.networks.sngan import SNGANDiscriminator, SNGANGenerator


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size: int, channels: int) -> None:
    g = DCGANGenerator(size, channels, latent_dim=10, base_channels=4)
    d = DCGANDiscriminator(size, channels, base_channels=4)
    x = g(torch.randn(3, 10))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert d(x).shape == (3,)
    # depth follows the size: one stride-2 layer per doubling above 4x4
    n_up = sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in g.modules())
    assert n_up == int(math.log2(size)) - 2


def test_dcgan_paper_widths_at_64() -> None:
    g = DCGANGenerator(64, 3, base_channels=64)
    widths = [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert widths == [512, 256, 128, 64, 3]  # Radford et al., figure 1


@pytest.mark.parametrize("size", [48, 100, 4])
def test_dcgan_rejects_sizes_it_cannot_build(size: int) -> None:
    with pytest.raises(
        GanforgeError, match=r"must be a power of two in \{8, 16, 32, 64, 128, 256, 512, 1024\}"
    ):
        DCGANGenerator(size, 3)
    with pytest.raises(GanforgeError, match=f"{size}x{size}"):
        DCGANDiscriminator(size, 3)


def test_dcgan_initialisation() -> None:
    g = DCGANGenerator(64, 3)
    conv = [m.weight for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    bn = [m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert abs(torch.cat([w.flatten() for w in conv]).std().item() - 0.02) < 0.002
    assert abs(torch.cat(bn).mean().item() - 1.0) < 0.01


def test_mlp_is_the_vanilla_gan() -> None:
    g = MLPGenerator(28, 1)
    d = MLPDiscriminator(28, 1)
    g_dims = [(m.in_features, m.out_features) for m in g.modules() if isinstance(m, nn.Linear)]
    d_dims = [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, nn.Linear)]
    assert g_dims == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert d_dims == [(784, 512), (512, 256), (256, 1)]
    x = g(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28) and d(x).shape == (5,)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_sngan_shapes_and_depth(size: int) -> None:
    g = SNGANGenerator(size, 3, latent_dim=16, width=8)
    d = SNGANDiscriminator(size, 3, width=8)
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1
    assert d(x).shape == (2,)
    assert len(g.blocks) == int(math.log2(size)) - 2  # one up-sampling block per doubling from 4x4
    downs = sum(block.down for block in d.blocks)
    assert size // 2**downs == (4 if size == 8 else 8)  # the critic ends at 8x8 (4x4 for 8x8 images)


def test_sngan_critic_is_spectrally_normalised() -> None:
    torch.manual_seed(0)
    d = SNGANDiscriminator(16, 3, width=8).train()
    for _ in range(30):
        d(torch.randn(4, 3, 16, 16))
    layers = [m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in layers]
    assert len(sigmas) == 8 and all(abs(s - 1) < 0.05 for s in sigmas), sigmas  # 3 + 2 + 2 convs, 1 linear


def test_sngan_rejects_sizes_it_cannot_build() -> None:
    with pytest.raises(GanforgeError, match=r"sngan cannot build 48x48 images"):
        SNGANGenerator(48, 3)
