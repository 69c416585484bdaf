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
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch
import torchvision.transforms.v2 as T
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

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
DecodedBatch = tuple[np.ndarray, list[int], list[tuple[int, str]]]  # images, their indices, unreadable ones


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


def decoded_batch(files: ImageFiles, start: int) -> DecodedBatch:
    """The images `start` to `start + PACK_BATCH` of `files` stacked in one array (one transfer from a
    worker, not one per image), their indices, and the unreadable ones with their reasons: the main
    process then skips or stops, and logs, as `skip_unreadable` says (a worker's log is not the user's)."""
    kept: list[tuple[int, Tensor]] = []
    problems: list[tuple[int, str]] = []
    for i in range(start, min(start + PACK_BATCH, len(files))):
        try:
            kept.append((i, files.decode(i)))
        except UNREADABLE as err:
            problems.append((i, describe(err)))
    images = torch.stack([x for _, x in kept]).numpy() if kept else np.empty(0, np.uint8)
    return images, [i for i, _ in kept], problems


_worker_files: ImageFiles | None = None  # what a pack-building worker process decodes


def _start_worker(files: ImageFiles) -> None:
    global _worker_files
    _worker_files = files
    torch.set_num_threads(1)  # one image at a time per process, as in a DataLoader worker


def _decode_in_worker(start: int) -> DecodedBatch:
    assert _worker_files is not None
    return decoded_batch(_worker_files, start)


def decoded_in_order(files: ImageFiles, workers: int) -> Iterator[DecodedBatch]:
    """`decoded_batch` over all of `files`, in order, from `workers` processes (this one if fewer than 2).

    A process pool, not a DataLoader: a worker that dies (the out-of-memory killer) is a
    `BrokenProcessPool` at the next result, and the pool is gone before the error reaches the user. A
    failed DataLoader iterator kept its other workers and queues alive for as long as its error was
    referenced, and processes forked meanwhile inherited them."""
    starts = range(0, len(files), PACK_BATCH)
    if workers < 2:
        yield from (decoded_batch(files, start) for start in starts)
        return
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(files,))
    try:
        pending: deque[Future] = deque()
        for start in starts:
            pending.append(pool.submit(_decode_in_worker, start))
            if len(pending) > 2 * workers:  # decoded batches waiting for the writer stay few
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


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
        """What the pack of one split is built from: its files decoded in order by worker processes."""
        identity = {
            "files": hashlib.blake2b(files.fingerprint().encode(), digest_size=16).hexdigest(),
            "skip unreadable": self.skip_unreadable,
        }

        def batches(workers: int) -> Iterator[tuple[Tensor, Tensor]]:
            labels = torch.as_tensor(files.labels, dtype=torch.long)
            for images, indices, problems in decoded_in_order(files, workers):
                for i, reason in problems:
                    files.unreadable(i, reason)
                if indices:
                    yield torch.from_numpy(images), labels[indices]

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
        self.select_train_subset()
