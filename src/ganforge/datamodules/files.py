"""Data sets read from image files (CelebA, any image folder).

By default (`pack`) each split is decoded once into a pack on disk that every later run memory-maps
(`datamodules.pack`). Without packs, small sets are decoded once per run into a uint8 tensor
(`in_memory`) and large ones per item in loader workers. Unreadable files stop the run with their
path, or are skipped when asked.
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
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ganforge.datamodules.base import ImageDataModule
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
PACK_CHUNK = 1024  # images decoded per step of a pack build: bounds its memory


def unreadable(path: Path, err: Exception) -> GanforgeError:
    return GanforgeError(
        f"cannot read image {path} ({type(err).__name__}: {err}); remove it or set data.skip_unreadable=true"
    )


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

    def load(self, i: int) -> Tensor | None:
        """The transformed image, or None for an unreadable file when skipping is allowed."""
        path = self.files[i]
        try:
            with Image.open(path) as img:
                image = TF.pil_to_tensor(img.convert(self.mode))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # what PIL raises
            if self.skip_unreadable:
                log.warning("skipping unreadable image %s (%s)", path, err)
                return None
            raise unreadable(path, err) from err
        return self.transform(image)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        for j in range(i, i + len(self)):
            image = self.load(j % len(self))
            if image is not None:
                return image, self.labels[j % len(self)]
        raise GanforgeError(
            f"none of the {len(self)} images (e.g. {self.files[0]}) is readable; check data.data_dir"
        )


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
        """What the pack of one split is built from: its files decoded by a pool of threads (PIL and the
        resize release the GIL), in order."""
        identity = {
            "files": hashlib.blake2b(files.fingerprint().encode(), digest_size=16).hexdigest(),
            "skip unreadable": self.skip_unreadable,
        }

        def batches(workers: int) -> Iterator[tuple[Tensor, Tensor]]:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for start in range(0, len(files), PACK_CHUNK):
                    indices = range(start, min(start + PACK_CHUNK, len(files)))
                    loaded = zip(indices, pool.map(files.load, indices), strict=True)
                    items = [(x, files.labels[i]) for i, x in loaded if x is not None]
                    if items:
                        images, labels = zip(*items, strict=True)
                        yield torch.stack(images), torch.tensor(labels, dtype=torch.long)

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
