"""Packed data sets: images decoded once into a uint8 array on disk that every later run and every DDP
rank memory-maps (StyleGAN's `dataset_tool.py`, without the extra step for the user).

A pack is a folder `<pack_dir>/<name>-<key>/` holding `images.u8` (raw uint8 `[N, C, H, W]`),
`labels.npy` and `manifest.json` (what it was built from, its shape and a content digest). The digest
covers the pixels, the labels and the manifest's count and shape, and is checked every time a pack is
opened: a pack edited or corrupted on disk is rebuilt (with a warning), never trained on. The whole
file is checked, not a sample (30 KB of edited pixels would escape one), but in 64 MiB chunks hashed
in parallel threads, then the chunks' digests: 0.79 GB/s on one core, 1.7 GB/s on two here
(`bench/pack_digest.py`), so the CelebA pack at 64 px (2.5 GB) costs about 1.5 s per open on two
cores, less with more, and each DDP rank checks it once. The key
hashes everything the decoded images depend on (file names, sizes and modification times, the
transform, the image size), so a changed folder or transform gets a new pack. Building happens in a
hidden folder that is renamed into place when complete, under a lock: a second process waits and then
reads the same pack, and an interrupted build leaves nothing that passes as a pack. The page cache
holds the pixels once per machine, however many processes read them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import Tensor
from torch.utils.data import Dataset

from ganforge.atomic import os_error, write_error
from ganforge.cache import cache_key, locked
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the layout or the decoding changes: older packs are rebuilt (2: digest, 16 bit, alpha)
MANIFEST, IMAGES, LABELS = "manifest.json", "images.u8", "labels.npy"
CHUNK = 64 << 20  # bytes of images.u8 per digest; the chunks are hashed in parallel

Batches = Iterator[tuple[Tensor, Tensor]]  # (uint8 images [b, C, H, W], labels [b]) in order


class DamagedPack(Exception):
    """A pack folder whose files do not match its manifest (truncated, edited, half-deleted)."""


def content_digest(images: np.ndarray, count: Any, shape: Any, labels: np.ndarray, workers: int) -> str:
    """blake2b of what a pack holds: the manifest's count and shape, the digest of each CHUNK bytes of
    the (memory-mapped) images, hashed in `workers` threads, and the labels."""
    images = images.reshape(-1)
    chunks = [images[start : start + CHUNK] for start in range(0, len(images), CHUNK)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        parts = list(pool.map(lambda chunk: hashlib.blake2b(chunk, digest_size=16).digest(), chunks))
    digest = hashlib.blake2b(json.dumps([count, shape]).encode(), digest_size=16)
    for part in parts:
        digest.update(part)
    digest.update(labels.astype(np.int64).tobytes())
    return digest.hexdigest()


class PackedImages(Dataset):
    """(uint8 image, label) from a pack, memory-mapped: nothing is read until an item is asked for,
    and a batch is one read (`__getitems__`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("format") != FORMAT:
                raise DamagedPack(f"format {manifest.get('format')!r}, expected {FORMAT}")
            shape = (manifest["count"], *manifest["shape"])
            size = (folder / IMAGES).stat().st_size
            if size != int(np.prod(shape)):
                raise DamagedPack(f"{IMAGES} has {size} bytes, the manifest says {int(np.prod(shape))}")
            self.images = np.memmap(folder / IMAGES, dtype=np.uint8, mode="r", shape=shape)
            labels = np.load(folder / LABELS, allow_pickle=False)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # any file, any JSON
            raise DamagedPack(f"{type(err).__name__}: {' '.join(str(err).split())[:120]}") from err
        if labels.shape != (shape[0],):
            raise DamagedPack(f"{LABELS} holds {labels.shape} labels for {shape[0]} images")
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return torch.from_numpy(np.array(self.images[i])), int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        images = torch.from_numpy(self.images[np.asarray(indices)])  # fancy indexing: one copy
        return list(zip(images.unbind(0), self.labels[list(indices)].tolist(), strict=True))

    def verify(self, workers: int) -> None:
        """Raise DamagedPack unless the content matches the manifest's digest (read once, at open)."""
        count, shape = self.manifest["count"], self.manifest["shape"]
        found = content_digest(self.images, count, shape, self.labels.numpy(), workers)
        if found != self.manifest.get("digest"):
            raise DamagedPack(f"its content does not match the digest in {MANIFEST} (edited or corrupted)")

    def fingerprint(self) -> str:
        """The content digest written when the pack was built (and checked when it was opened)."""
        return self.manifest["digest"]

    def __getstate__(self) -> dict[str, Any]:  # workers and spawned ranks map the file, never copy it
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])


@dataclass
class Source:
    """What a pack is built from: `name` (folder prefix, e.g. "celeba-train-64px"), `identity`
    (JSON-able; everything the decoded images depend on), `total` (images, for the progress bar, skipped
    ones included; None when unknown before decoding) and `batches(workers)`, which decodes them in
    order."""

    name: str
    identity: dict[str, Any]
    total: int | None
    batches: Callable[[int], Batches]
    origin: str = ""  # shown in the manifest and the log: the folder or files it came from


def open_pack(source: Source, pack_dir: str | Path, workers: int | None = None) -> PackedImages:
    """The pack of `source`, built first if there is none (or only a damaged one)."""
    folder = Path(pack_dir) / f"{source.name}-{cache_key(source.identity | {'format': FORMAT})}"
    workers = workers or available_cpus()
    try:
        with locked(folder):  # a second process waits here, then finds the pack complete
            if folder.is_dir():
                try:
                    packed = PackedImages(folder)
                    packed.verify(workers)
                    return packed
                except DamagedPack as err:
                    log.warning("pack %s is damaged (%s); rebuilding it", folder, err)
                    shutil.rmtree(folder)
            build(source, folder, workers)
            return PackedImages(folder)
    except OSError as err:  # the lock or the folder itself: build() reports its own writes
        raise GanforgeError(
            f"cannot use {folder.parent} for packs ({type(err).__name__}: {err.strerror or err}); point "
            "data.pack_dir (or paths.cache_dir) at a writable folder, or set data.pack=false"
        ) from err


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Rate(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(f"{task.speed or 0:,.0f} images/s")


def build(source: Source, folder: Path, workers: int) -> None:
    """Decode `source` into `folder`, via a hidden sibling renamed into place when complete."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    log.info(
        "packing %s (%s images, %d decoding processes) into %s: once; later runs and every DDP rank read it",
        source.origin or source.name, source.total or "all", workers, folder,
    )  # fmt: skip
    start = time.perf_counter()
    try:
        tmp.mkdir(parents=True)
        labels, shape = [], ()
        columns = (TextColumn("packing {task.description}"), BarColumn(), MofNCompleteColumn(), Rate())
        with open(tmp / IMAGES, "wb") as f, Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(source.name, total=source.total)
            for images, batch_labels in source.batches(workers):
                shape = tuple(images.shape[1:])
                f.write(images.contiguous().numpy().tobytes())
                labels.append(batch_labels.numpy().astype(np.int64))
                bar.advance(task, len(images))
            f.flush()
            os.fsync(f.fileno())
        if not labels:
            what = source.origin or source.name
            raise GanforgeError(f"no image of {what} could be decoded; check data.data_dir")
        labels_array = np.concatenate(labels)
        np.save(tmp / LABELS, labels_array)
        written = np.memmap(tmp / IMAGES, dtype=np.uint8, mode="r")
        digest = content_digest(written, len(labels_array), list(shape), labels_array, workers)
        seconds = time.perf_counter() - start
        manifest = {
            "format": FORMAT,
            "origin": source.origin,
            "identity": source.identity,
            "count": len(labels_array),
            "shape": list(shape),
            "digest": digest,
            "skipped": (source.total or len(labels_array)) - len(labels_array),
            "build seconds": round(seconds, 2),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        tmp.rename(folder)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if died(err):
            raise GanforgeError(
                f"a decoding process died while packing {source.origin or source.name}; nothing was kept: "
                "rerun to build the pack again (if memory ran out, free some first)"
            ) from err
        cause = None if isinstance(err, GanforgeError) else os_error(err)  # not a decoding error: a write
        if cause is not None:
            raise write_error(tmp / IMAGES, cause) from err
        raise
    rate = len(labels_array) / max(seconds, 1e-9)
    log.info("packed %d images in %.1f s (%.0f images/s)", len(labels_array), seconds, rate)


def died(err: BaseException) -> bool:
    """Whether `err` reports a worker process that died (SIGKILL, the out-of-memory killer): a pack
    build's `BrokenProcessPool`, or torch's plain RuntimeError for a DataLoader worker (from the loader
    or from its SIGCHLD handler)."""
    return isinstance(err, BrokenProcessPool) or (
        isinstance(err, RuntimeError) and str(err).startswith("DataLoader worker (pid")
    )
