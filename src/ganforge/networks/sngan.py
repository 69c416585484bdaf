"""SNGAN (Miyato et al. 2018): ResNet generator with batch norm; ResNet critic with spectral
normalisation on every layer and global sum pooling, meant for the hinge loss. Depth follows the
image size: one up-sampling block per doubling from 4x4; the critic down-samples to 8x8 (4x4 for
8x8 images) and ends with two blocks at that size.

With `num_classes` set (cSNGAN, Miyato & Koyama 2018): conditional batch norm in the generator
(per-class scale and shift) and a projection critic. `embed_dim` > 0 also concatenates a learned class
embedding to the noise (as cDCGAN does, and BigGAN with its shared embedding): conditional batch norm
alone learns the label slowly (a scale and shift per channel cannot easily move content), so short
runs ignore the requested class without it (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.networks.dcgan import check_num_classes, num_doublings


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.scale, self.shift = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.bn(x) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int | None = None) -> None:
        super().__init__()
        self.conditional = num_classes is not None
        self.bn1 = ConditionalBatchNorm2d(c_in, num_classes) if num_classes else nn.BatchNorm2d(c_in)
        self.bn2 = ConditionalBatchNorm2d(c_out, num_classes) if num_classes else nn.BatchNorm2d(c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def _norm(self, bn: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
        return bn(x, labels) if self.conditional else bn(x)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.conv1(F.interpolate(F.relu(self._norm(self.bn1, x, labels)), scale_factor=2))
        h = self.conv2(F.relu(self._norm(self.bn2, h, labels)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class DownBlock(nn.Module):
    """`first`: the block that sees images (no leading ReLU; pool before the shortcut conv)."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(c_in, c_out, 1)) if (c_in != c_out or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        shortcut = x
        if self.skip is not None:
            if self.first:
                shortcut = self.skip(F.avg_pool2d(x, 2))
            else:
                shortcut = self.skip(x)
                shortcut = F.avg_pool2d(shortcut, 2) if self.down else shortcut
        return h + shortcut


class SNGANGenerator(nn.Module):
    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int = 128,
        width: int = 256,
        num_classes: int | None = None,
        embed_dim: int = 0,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.latent_dim, self.width, self.num_classes = latent_dim, width, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes and embed_dim else None
        self.fc = nn.Linear(latent_dim + (embed_dim if self.embed is not None else 0), 4 * 4 * width)
        self.blocks = nn.ModuleList(
            UpBlock(width, width, num_classes) for _ in range(num_doublings(image_size, "sngan"))
        )
        self.out = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, channels, 3, 1, 1)
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        h = self.fc(z).view(z.shape[0], self.width, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return self.out(h).tanh()


class SNGANDiscriminator(nn.Module):
    def __init__(
        self, image_size: int, channels: int, width: int = 128, num_classes: int | None = None
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.num_classes = num_classes
        downs = max(num_doublings(image_size, "sngan") - 2, 0)
        self.blocks = nn.Sequential(
            DownBlock(channels, width, down=True, first=True),
            *(DownBlock(width, width, down=True) for _ in range(downs)),
            DownBlock(width, width, down=False),
            DownBlock(width, width, down=False),
        )
        self.fc = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, width)) if num_classes else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        out = self.fc(h).flatten()
        return out if self.embed is None else out + (self.embed(labels) * h).sum(dim=1)
