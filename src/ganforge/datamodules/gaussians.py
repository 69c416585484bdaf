"""The 2-D Gaussian mixtures of the mode-collapse literature: 8 modes on a ring of radius 2 with
std 0.02 (Metz et al. 2017) and 25 modes on a 5x5 grid with spacing 2 and std 0.05 (Srivastava et
al. 2017; Lin et al. 2018). Batches are (points [B, 2], mode index); the sample grid draws them as
scatter plots.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from ganforge.datamodules.base import resumable_loader
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)

KINDS = {"ring": 0.02, "grid": 0.05}


def mixture_modes(kind: str) -> Tensor:
    if kind == "ring":
        angles = torch.arange(8) * (2 * math.pi / 8)
        return 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    if kind == "grid":
        axis = torch.arange(-4.0, 5.0, 2.0)
        return torch.cartesian_prod(axis, axis)
    raise GanforgeError(f"data.kind={kind!r} is unknown; use ring or grid")


class GaussianMixtureDataModule(LightningDataModule):
    def __init__(
        self,
        kind: str = "ring",
        std: float | None = None,
        num_samples: int = 100_000,
        batch_size: int = 256,
        seed: int = 0,
        plot_size: int | None = None,
        num_workers: int = 0,
        dim: int = 2,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.modes = mixture_modes(kind)
        self.std = KINDS[kind] if std is None else std
        self.num_classes = len(self.modes)
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        if plot_size is not None:
            log.warning(
                "data.plot_size is no longer used: scatter plots are drawn by the sample grid; set "
                "callbacks.sample_grid.plot_size=%d instead",
                plot_size,
            )
        if dim != 2:
            raise GanforgeError(f"data.dim={dim}: the Gaussian mixtures are 2-D; use dim=2")
        self.dim = dim
        self.num_workers = num_workers
        self.data_train: TensorDataset | None = None

    @property
    def name(self) -> str:
        return f"gaussians_{self.kind}"

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        labels = torch.randint(len(self.modes), (n,), generator=generator)
        return self.modes[labels] + self.std * torch.randn(n, 2, generator=generator), labels

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            self.data_train = TensorDataset(
                *self.sample(self.num_samples, torch.Generator().manual_seed(self.seed))
            )

    def train_dataloader(self) -> StatefulDataLoader:
        return resumable_loader(self.data_train, self.batch_size, self.num_workers)
