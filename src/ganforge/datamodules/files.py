"""Data sets read from image files (CelebA, any image folder).

By default (`pack`) each split is decoded once into a pack on disk that every later run memory-maps
(`datamodules.pack`). Without packs, small sets are decoded once per run into a uint8 tensor
(`in_memory`) and large ones per item in loader workers. Unreadable files stop the run with their
path, or are skipped when asked. What a file's pixels become (8 bits, transparency, elongated images):
`datamodules.image_file`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import torch
import torchvision.transforms.v2 as T
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ganforge.datamodules.base import ImageDataModule
from ganforge.datamodules.image_file import MAX_ASPECT, UNREADABLE, describe, read_image
from ganforge.datamodules.pack import Source, open_pack
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)


def available_memory() -> int:
    return psutil.virtual_memory().available


def in_memory_limit(world_size: int) -> int:
    """Bytes of decoded pixels `in_memory: auto` keeps in RAM: a quarter of the memory available now,
    shared by the processes of one machine (decoding briefly holds the pixels twice)."""
    return available_memory() // 4 // max(1, world_size)


Split = tuple[list[Path], list[int]]
PACK_BATCH = 256  # images a pack-building worker decodes per batch


def unreadable(path: Path, reason: str) -> GanforgeError:
    return GanforgeError(f"cannot read image {path} ({reason}); remove it or set data.skip_unreadable=true")


class ImageFiles(Dataset):
    """(uint8 image, label) from files. With `skip_unreadable`, an item whose file cannot be read is
    replaced by the next readable one, so batches stay full (and batch norm never sees an empty one)."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: T.Transform,
        channels: int,
        skip_unreadable: bool,
    ) -> None:
        self.files, self.labels = files, labels
        self.transform = transform
        self.mode = "L" if channels == 1 else "RGB"
        self.skip_unreadable = skip_unreadable

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Paths, sizes, modification times, labels and preprocessing: what changes the decoded images."""
        stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files]
        return repr((stats, self.labels, self.mode, repr(self.transform)))

    def decode(self, i: int) -> Tensor:
        """The transformed image; one of `UNREADABLE` for a file that cannot be used."""
        return self.transform(read_image(self.files[i], self.mode, MAX_ASPECT))

    def load(self, i: int) -> Tensor | None:
        """The transformed image, or None for an unreadable file when skipping is allowed."""
        try:
            return self.decode(i)
        except UNREADABLE as err:
            return self.unreadable(i, describe(err))

    def unreadable(self, i: int, reason: str) -> None:
        """Skip (with a warning) or stop at an unreadable file, as `skip_unreadable` says."""
        if not self.skip_unreadable:
            raise unreadable(self.files[i], reason)
        log.warning("skipping unreadable image %s (%s)", self.files[i], reason)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        for j in range(i, i + len(self)):
            image = self.load(j % len(self))
            if image is not None:
                return image, self.labels[j % len(self)]
        raise GanforgeError(
            f"none of the {len(self)} images (e.g. {self.files[0]}) is readable; check data.data_dir"
        )


class Decoded(Dataset):
    """(index, image or the reason it is unreadable) of `files`, for a pack build: the main process
    then skips or stops, and logs, as `skip_unreadable` says (a worker's log or traceback is not the
    user's)."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Tensor | str]:
        try:
            return i, self.files.decode(i)
        except UNREADABLE as err:
            return i, describe(err)


def decoded_batch(items: list[tuple[int, Tensor | str]]) -> tuple[Tensor, Tensor, list[tuple[int, str]]]:
    """One tensor of a worker's decoded images (one shared-memory transfer, not one per image), their
    indices, and the unreadable ones with their reasons."""
    kept = [(i, x) for i, x in items if not isinstance(x, str)]
    problems = [(i, x) for i, x in items if isinstance(x, str)]
    images = torch.stack([x for _, x in kept]) if kept else torch.empty(0, dtype=torch.uint8)
    return images, torch.tensor([i for i, _ in kept], dtype=torch.long), problems


class FileImageDataModule(ImageDataModule):
    """Base for file-based sets: subclasses list the files of each split in `index()`."""

    def __init__(
        self,
        data_dir: str,
        image_size: int,
        channels: int = 3,
        in_memory: bool | str = "auto",
        skip_unreadable: bool = False,
        num_workers: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, channels, num_workers=num_workers, **kwargs)
        if channels not in (1, 3):  # files are decoded as "L" or "RGB"
            raise GanforgeError(f"data.channels={channels} is not supported for image files; use 1 or 3")
        if in_memory not in (True, False, "auto"):
            raise GanforgeError(f"data.in_memory must be true, false or auto, got {in_memory!r}")
        self.in_memory_mode = in_memory
        self.skip_unreadable = skip_unreadable

    def index(self) -> dict[str, Split]:
        """Files and labels of the 'train', 'val' and 'test' splits."""
        raise NotImplementedError

    def transform(self) -> T.Transform:
        """uint8 tensor -> uint8 tensor of image_size x image_size: shorter side resized, centre cropped."""
        return T.Compose([T.Resize(self.image_size, antialias=True), T.CenterCrop(self.image_size)])

    def _keep_in_memory(self, n: int) -> bool:
        if self.in_memory_mode == "auto":
            world_size = self.trainer.world_size if self.trainer is not None else 1
            return n * self.channels * self.image_size**2 <= in_memory_limit(world_size)
        return bool(self.in_memory_mode)

    def _decode_all(self, files: ImageFiles) -> TensorDataset:
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            loaded = pool.map(files.load, range(len(files)))
            items = [(x, y) for x, y in zip(loaded, files.labels, strict=True) if x is not None]
        if len(items) < len(files):
            log.warning("skipped %d unreadable image(s) of %d", len(files) - len(items), len(files))
        if not items:
            shape = (0, self.channels, self.image_size, self.image_size)
            return TensorDataset(torch.empty(shape, dtype=torch.uint8), torch.empty(0, dtype=torch.long))
        images, labels = zip(*items, strict=True)
        return TensorDataset(torch.stack(images), torch.tensor(labels, dtype=torch.long))

    def pack_source(self, split: str, files: ImageFiles) -> Source:
        """What the pack of one split is built from: its files decoded in order by loader processes."""
        identity = {
            "files": hashlib.blake2b(files.fingerprint().encode(), digest_size=16).hexdigest(),
            "skip unreadable": self.skip_unreadable,
        }

        def batches(workers: int) -> Iterator[tuple[Tensor, Tensor]]:
            loader = DataLoader(
                Decoded(files), batch_size=PACK_BATCH, num_workers=workers if workers > 1 else 0,
                collate_fn=decoded_batch,
                generator=torch.Generator(),  # its seed draw leaves the global RNG alone (not random)
            )  # fmt: skip
            labels = torch.as_tensor(files.labels, dtype=torch.long)
            for images, indices, problems in loader:
                for i, reason in problems:
                    files.unreadable(i, reason)
                if len(indices):
                    yield images, labels[indices]

        name = f"{self.name}-{split}-{self.image_size}px"
        return Source(name, identity, len(files), batches, str(Path(self.data_dir)))

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        splits = self.index()
        in_memory = not self.pack and self._keep_in_memory(sum(len(files) for files, _ in splits.values()))
        datasets: dict[str, Dataset] = {}
        for name, (files, labels) in splits.items():
            dataset = ImageFiles(files, labels, self.transform(), self.channels, self.skip_unreadable)
            if self.pack and files:
                datasets[name] = open_pack(self.pack_source(name, dataset), self.pack_dir)
            else:
                datasets[name] = self._decode_all(dataset) if in_memory else dataset
        self.data_train, self.data_val, self.data_test = datasets["train"], datasets["val"], datasets["test"]
        self.keep_train_fraction()
