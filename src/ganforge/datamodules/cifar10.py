"""CIFAR-10 through torchvision (the python pickle batches under `<data_dir>/cifar-10-batches-py`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, VisionDataset

from ganforge.datamodules.base import TorchvisionDataModule
from ganforge.datamodules.torchvision_root import torchvision_root


class CIFAR10DataModule(TorchvisionDataModule):
    dataset_cls = CIFAR10
    num_classes = 10

    def __init__(self, data_dir: str, image_size: int = 32, channels: int = 3, **kwargs) -> None:
        # `data_dir` holds cifar-10-batches-py; that folder itself is recognised too
        super().__init__(torchvision_root(data_dir, (CIFAR10.base_folder,)), image_size, channels, **kwargs)

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / CIFAR10.base_folder

    @property
    def expected_files(self) -> list[str]:
        return [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + ["batches.meta"]

    @staticmethod
    def tensors(dataset: VisionDataset) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(dataset.data).permute(0, 3, 1, 2), torch.tensor(dataset.targets)
