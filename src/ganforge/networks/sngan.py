"""SNGAN (Miyato et al. 2018): ResNet generator with batch norm; ResNet critic with spectral
normalisation on every layer and global sum pooling, meant for the hinge loss. Depth follows the
image size: one up-sampling block per doubling from 4x4; the critic down-samples to 8x8 (4x4 for
8x8 images) and ends with two blocks at that size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.networks.dcgan import num_doublings


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.interpolate(F.relu(self.bn1(x)), scale_factor=2))
        h = self.conv2(F.relu(self.bn2(h)))
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
    def __init__(self, image_size: int, channels: int, latent_dim: int = 128, width: int = 256) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.fc = nn.Linear(latent_dim, 4 * 4 * width)
        self.blocks = nn.Sequential(
            *(UpBlock(width, width) for _ in range(num_doublings(image_size, "sngan")))
        )
        self.out = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, channels, 3, 1, 1)
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.width, 4, 4)
        return self.out(self.blocks(h)).tanh()


class SNGANDiscriminator(nn.Module):
    def __init__(self, image_size: int, channels: int, width: int = 128) -> None:
        super().__init__()
        downs = max(num_doublings(image_size, "sngan") - 2, 0)
        self.blocks = nn.Sequential(
            DownBlock(channels, width, down=True, first=True),
            *(DownBlock(width, width, down=True) for _ in range(downs)),
            DownBlock(width, width, down=False),
            DownBlock(width, width, down=False),
        )
        self.fc = spectral_norm(nn.Linear(width, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return self.fc(h).flatten()
