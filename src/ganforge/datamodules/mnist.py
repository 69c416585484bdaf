"""MNIST and Fashion-MNIST through torchvision (IDX files under `<data_dir>/<Name>/raw`)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor
from torchvision.datasets import MNIST, FashionMNIST, VisionDataset

from ganforge.datamodules.base import TorchvisionDataModule
from ganforge.datamodules.torchvision_root import torchvision_root


class MNISTDataModule(TorchvisionDataModule):
    """60k training images (`val_size` of them held out) and the official 10k test images."""

    dataset_cls = MNIST
    num_classes = 10

    def __init__(self, data_dir: str, image_size: int = 32, channels: int = 1, **kwargs) -> None:
        # `data_dir` holds <Name>/raw; …/<Name>/raw or …/<Name> themselves are recognised too
        root = torchvision_root(data_dir, (self.dataset_cls.__name__, "raw"))
        super().__init__(root, image_size, channels, **kwargs)

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / self.dataset_cls.__name__ / "raw"

    @property
    def expected_files(self) -> list[str]:
        """The extracted files torchvision loads (it unpacks the .gz archives only with download=True)."""
        return [os.path.splitext(os.path.basename(url))[0] for url, _ in self.dataset_cls.resources]

    @staticmethod
    def tensors(dataset: VisionDataset) -> tuple[Tensor, Tensor]:
        return dataset.data.unsqueeze(1), dataset.targets


class FashionMNISTDataModule(MNISTDataModule):
    dataset_cls = FashionMNIST
