"""What every ganforge data module shares.

Datasets yield `(uint8 image [C, H, W], int label)`: images stay compact in memory and in worker
queues, and become floats in [-1, 1] only after the batch reaches the device
(`on_after_batch_transfer`). Data that fits in memory is decoded and resized once, in `setup`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.datasets import VisionDataset

from ganforge.errors import GanforgeError


def to_signed_unit(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """Convert a uint8 batch [N, C, H, W] between grayscale and RGB."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        return TF.rgb_to_grayscale(images)
    raise GanforgeError(f"cannot convert {have}-channel images to data.channels={channels}; use 1 or 3")


def resize_uint8(images: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Resize a uint8 batch [N, C, h, w] to size x size with antialiasing, in chunks to bound memory."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    return torch.cat([TF.resize(part, [size, size], antialias=True) for part in images.split(chunk)])


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[Tensor]:
    """A seeded random partition of range(n): one index tensor per fraction, the rest first."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(f * n) for f in fractions]
    rest = n - sum(sizes)
    if rest <= 0:
        raise GanforgeError(f"split fractions {list(fractions)} leave no training data out of {n} images")
    return list(perm.split([rest, *sizes]))


class ImageDataModule(LightningDataModule):
    """Base: subclasses fill `data_train`, `data_val`, `data_test` in `setup` and set `num_classes`."""

    num_classes: int | None = None

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1:
            raise GanforgeError("data.image_size and data.batch_size must be positive")
        self.data_dir = data_dir
        self.image_size = image_size
        self.channels = channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("DataModule").lower()

    def in_memory(self, images: Tensor, labels: Tensor) -> TensorDataset:
        """Finish a decoded uint8 batch (channels, size) and keep it as a tensor data set."""
        images = resize_uint8(match_channels(images, self.channels), self.image_size)
        return TensorDataset(images, labels.long())

    def _loader(self, dataset: Dataset | None, split: str, train: bool) -> DataLoader:
        if dataset is None:
            raise GanforgeError(f"{self.name} has no {split} split; call setup() first")
        if train and len(dataset) < self.batch_size:
            raise GanforgeError(
                f"data.batch_size={self.batch_size} is larger than the {len(dataset)} {self.name} training "
                f"images; lower data.batch_size"
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, "val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, "test", train=False)

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return to_signed_unit(images), labels


def subset(dataset: Dataset, indices: Tensor) -> Dataset:
    """A split of `dataset`; tensor data sets are sliced (contiguous, fast) rather than wrapped."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[indices] for t in dataset.tensors))
    return Subset(dataset, indices.tolist())


class TorchvisionDataModule(ImageDataModule):
    """A torchvision data set with official train/test files; `val_size` training images are held out."""

    dataset_cls: type[VisionDataset]

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int,
        val_size: int = 5000,
        split_seed: int = 0,
        download: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir, image_size, channels, batch_size, num_workers, pin_memory)
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download

    @property
    def folder(self) -> Path:
        """Where torchvision looks for the files."""
        raise NotImplementedError

    @property
    def expected_files(self) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def tensors(dataset: VisionDataset) -> tuple[Tensor, Tensor]:
        """(uint8 images [N, C, H, W], labels [N]) of a loaded torchvision data set."""
        raise NotImplementedError

    def _missing(self, reason: str) -> GanforgeError:
        reason = " ".join(reason.split())  # torchvision's download errors span lines; messages are one line
        return GanforgeError(
            f"{self.dataset_cls.__name__} not found in {self.folder} ({reason}): put "
            f"{', '.join(self.expected_files)} there, or set data.download=true with network access"
        )

    def prepare_data(self) -> None:
        if not self.download:
            return
        for train in (True, False):
            try:
                self.dataset_cls(self.data_dir, train=train, download=True)
            except Exception as err:  # offline, torchvision raises URLError, RuntimeError, ...
                raise self._missing(f"download failed: {type(err).__name__}: {err}") from err

    def _load(self, train: bool) -> TensorDataset:
        try:
            dataset = self.dataset_cls(self.data_dir, train=train, download=False)
        except RuntimeError as err:  # "Dataset not found or corrupted"
            raise self._missing(str(err).rstrip(".")) from err
        return self.in_memory(*self.tensors(dataset))

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        full = self._load(train=True)
        n = len(full)
        if not 0 <= self.val_size < n:
            raise GanforgeError(f"data.val_size={self.val_size} must be in [0, {n})")
        train, val = split_indices(n, [self.val_size / n], self.split_seed)
        self.data_train, self.data_val = subset(full, train), subset(full, val)
        self.data_test = self._load(train=False)


def fingerprint(dataset: Dataset) -> str:
    """A content hash of a data set: caches keyed by it are never reused for changed data."""
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(dataset, TensorDataset):
        for t in dataset.tensors:
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(t.contiguous().numpy().tobytes())
    elif isinstance(dataset, Subset):
        digest.update(fingerprint(dataset.dataset).encode())
        digest.update(torch.as_tensor(dataset.indices).numpy().tobytes())
    elif hasattr(dataset, "fingerprint"):
        digest.update(dataset.fingerprint().encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(dataset).__name__}")
    return digest.hexdigest()
