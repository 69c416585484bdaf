"""What every ganforge data module shares.

Datasets yield `(uint8 image [C, H, W], int label)`: images stay compact in memory and in worker
queues, and become floats in [-1, 1] only after the batch reaches the device
(`on_after_batch_transfer`). Data that fits in memory is decoded and resized once, in `setup`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchvision.datasets import VisionDataset

from ganforge.checks import check_batch_fits
from ganforge.datamodules.long_tail import LongTail
from ganforge.datamodules.pack import PackedImages, Source, open_pack
from ganforge.datamodules.sampler import EpochShuffle, WeightedEpochDraw
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)


def to_signed_unit(images: Tensor, memory_format: torch.memory_format = torch.preserve_format) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1], written in `memory_format` (e.g. NHWC for channels_last)."""
    return images.to(torch.float32, memory_format=memory_format).div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded (the inverse of `to_signed_unit` up to quantisation)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


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
    """Base: subclasses fill `data_train`, `data_val`, `data_test` in `setup`, set `num_classes`, and
    end `setup` with `self.select_train_subset()`."""

    num_classes: int | None = None

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        train_fraction: float = 1.0,
        train_fraction_seed: int = 0,
        train_per_class: int | None = None,
        long_tail: Mapping[str, Any] | None = None,
        class_balanced: bool = False,
        pack: bool = False,
        pack_dir: str | None = None,
    ) -> None:
        super().__init__()
        if pack and not pack_dir:
            raise GanforgeError(
                "data.pack=true needs data.pack_dir (e.g. data.pack_dir=cache/packs); or set data.pack=false"
            )
        self.pack, self.pack_dir = pack, pack_dir
        if image_size < 1 or batch_size < 1:
            raise GanforgeError("data.image_size and data.batch_size must be positive")
        if not 0 < train_fraction <= 1:
            raise GanforgeError(f"data.train_fraction must be in (0, 1], got {train_fraction}")
        if train_per_class is not None and (train_per_class < 1 or train_fraction != 1):
            raise GanforgeError(
                f"data.train_per_class={train_per_class} with data.train_fraction={train_fraction}: set one "
                "of them, train_per_class to a count >= 1 (e.g. data.train_per_class=10)"
            )
        self.long_tail = LongTail.from_config(long_tail)
        if self.long_tail is not None and (train_per_class is not None or train_fraction != 1):
            raise GanforgeError(
                "data.long_tail with data.train_per_class or data.train_fraction: set one of them (long_tail "
                "cuts the training split itself)"
            )
        self.class_balanced = class_balanced
        self.train_fraction = train_fraction
        self.train_per_class = train_per_class
        # per class, once a long tail cut the split: logged with the run's config (hparams.yaml, W&B)
        self.train_class_counts: list[int] | None = None
        self.train_fraction_seed = train_fraction_seed
        self.data_dir = data_dir
        self.image_size = image_size
        self.channels = channels
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_train: Dataset | None = None
        # the training split before train_fraction / train_per_class / long_tail cut it: what the
        # metrics classifier learns from, so that every cut of a data set is judged by the same network
        self.full_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        # the layout of the float batches handed to the model: GANLitModule asks for NHWC
        # (torch.channels_last) when its convolutions use it, so no step copies the batch again
        self.memory_format = torch.preserve_format

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("DataModule").lower()

    def in_memory(self, images: Tensor, labels: Tensor) -> TensorDataset:
        """Finish a decoded uint8 batch (channels, size) and keep it as a tensor data set."""
        images = resize_uint8(match_channels(images, self.channels), self.image_size)
        return TensorDataset(images, labels.long())

    def select_train_subset(self) -> None:
        """The scarce-data and long-tail settings, drawn from the train split (seeded by
        `train_fraction_seed`): `train_per_class` images of every class, `train_fraction` of the
        training images (train + val splits, e.g. MNIST's 60,000) in equal numbers per class, or a
        long tail (`ganforge.datamodules.long_tail`)."""
        if self.data_train is None:
            return
        self.full_train = self.data_train
        if self.long_tail is not None:
            self._keep_long_tail(self.long_tail)
            return
        if self.train_fraction == 1 and self.train_per_class is None:
            return
        total = len(self.data_train) + len(self.data_val or [])
        labels = labels_of(self.data_train)
        classes = self.num_classes if self.num_classes and self.num_classes > 1 else 1
        if self.train_per_class is not None:
            knob, per_class = "data.train_per_class", self.train_per_class
            what = f"{knob}={per_class} of {total} {self.name} training images"
        else:
            knob, per_class = "data.train_fraction", round(self.train_fraction * total / classes)
            what = f"{knob}={self.train_fraction} of {total} {self.name} training images"
        if per_class < 1:
            raise GanforgeError(f"{what} leaves no image per class; raise data.train_fraction")
        order = self._subset_order(len(labels))
        if classes == 1:
            keep = order[:per_class]
        else:
            picks = []
            for c in range(classes):
                of_class = order[labels[order] == c]
                if len(of_class) < per_class:
                    raise GanforgeError(
                        f"{what} needs {per_class} images of class {c}, the train split has "
                        f"{len(of_class)}; lower {knob}"
                    )
                picks.append(of_class[:per_class])
            keep = torch.cat(picks).sort().values
        self.data_train = subset(self.data_train, keep)

    def _subset_order(self, n: int) -> Tensor:
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.train_fraction_seed))

    def _keep_long_tail(self, tail: LongTail) -> None:
        if not self.num_classes or self.num_classes < 2:
            raise GanforgeError(f"data.long_tail needs class labels; {self.name} has none")
        assert self.data_train is not None
        labels = labels_of(self.data_train)
        order = self._subset_order(len(labels))
        of_class = [order[labels[order] == c] for c in range(self.num_classes)]
        counts = tail.counts([len(x) for x in of_class])
        keep = torch.cat([x[:n] for x, n in zip(of_class, counts, strict=True)]).sort().values
        self.data_train = subset(self.data_train, keep)
        self.train_class_counts = counts
        if rank_zero_only.rank == 0:
            log.info(
                "long tail (%s, ratio %g): keeping %s images of classes 0..%d, %d in all; validation and "
                "test sets as drawn", tail.profile, tail.ratio, counts, self.num_classes - 1, sum(counts),
            )  # fmt: skip

    def _loader(self, dataset: Dataset | None, split: str, train: bool) -> DataLoader:
        if dataset is None:
            raise GanforgeError(f"{self.name} has no {split} split; call setup() first")
        if train:
            check_batch_fits(self.batch_size, len(dataset), self.name)
        workers = self.num_workers
        if workers and decoded(dataset):
            if rank_zero_only.rank == 0:  # every DDP rank decides the same: say it once
                log.info(
                    "%s %s split is decoded already: loading it in the main process (data.num_workers=%d "
                    "would only add copies between processes)", self.name, split, workers,
                )  # fmt: skip
            workers = 0
        if train:  # resumable: a checkpoint holds the data order and where in it training stopped
            weights = self._class_balanced_weights(dataset) if self.class_balanced else None
            return resumable_loader(dataset, self.batch_size, workers, self.pin_memory, weights)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
        )

    def _class_balanced_weights(self, dataset: Dataset) -> Tensor:
        if not self.num_classes or self.num_classes < 2:
            raise GanforgeError(
                f"data.class_balanced=true draws every class equally often, and {self.name} has no class "
                "labels; set data.class_balanced=false"
            )
        return class_balanced_weights(labels_of(dataset))

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
        return to_signed_unit(images, self.memory_format), labels


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    weights: Tensor | None = None,
) -> StatefulDataLoader:
    """The training loader: shuffled by `EpochShuffle` (seeded by the run's seed), full batches only;
    drawn with replacement in proportion to `weights` when given (`WeightedEpochDraw`). Its own
    generator (worker seeds) keeps it off the global RNG, which the training noise owns."""
    seed = torch.initial_seed()
    sampler = EpochShuffle(len(dataset), seed) if weights is None else WeightedEpochDraw(weights, seed)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def class_balanced_weights(labels: Tensor) -> Tensor:
    """A weight per image, 1 / its class's count: every class is drawn equally often."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()


def decoded(dataset: Dataset) -> bool:
    """Pixels that are decoded already (a tensor or a pack): loader workers would only add IPC."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, TensorDataset | PackedImages)


def labels_of(dataset: Dataset) -> Tensor:
    """The labels of a ganforge data set, without decoding any image."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return torch.as_tensor(dataset.labels)  # ImageFiles, PackedImages


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
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, channels, **kwargs)
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

    def _load(self, train: bool) -> Dataset:
        """The official train or test set, resized; from its pack when `pack` is on."""
        if not self.pack:
            return self._decode(train)
        split = "train" if train else "test"
        files = sorted(p for p in self.folder.rglob("*") if p.is_file()) if self.folder.is_dir() else []
        identity = {
            "data set": self.dataset_cls.__name__, "split": split, "image size": self.image_size,
            "channels": self.channels,
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
        }  # fmt: skip

        def batches(workers: int) -> Iterator[tuple[Tensor, Tensor]]:
            images, labels = self._decode(train).tensors
            yield from zip(images.split(4096), labels.split(4096), strict=True)

        name = f"{self.name}-{split}-{self.image_size}px"
        return open_pack(Source(name, identity, None, batches, str(self.folder)), self.pack_dir)

    def _decode(self, train: bool) -> TensorDataset:
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
        self.select_train_subset()
