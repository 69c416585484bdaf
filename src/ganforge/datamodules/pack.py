"""Packed data sets: images decoded once into a uint8 array on disk that every later run and every DDP
rank memory-maps (StyleGAN's `dataset_tool.py`, without the extra step for the user).

A pack is a folder `<pack_dir>/<name>-<key>/` holding `images.u8` (raw uint8 `[N, C, H, W]`),
`labels.npy` and `manifest.json` (what it was built from, its shape and a content digest). The key
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

FORMAT = 1  # bump when the layout changes: older packs are then rebuilt
MANIFEST, IMAGES, LABELS = "manifest.json", "images.u8", "labels.npy"

Batches = Iterator[tuple[Tensor, Tensor]]  # (uint8 images [b, C, H, W], labels [b]) in order


class DamagedPack(Exception):
    """A pack folder whose files do not match its manifest (truncated, edited, half-deleted)."""


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
        except (OSError, ValueError, KeyError, TypeError) as err:
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

    def fingerprint(self) -> str:
        """The content digest written when the pack was built: no pixel is read again."""
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
    try:
        with locked(folder):  # a second process waits here, then finds the pack complete
            if folder.is_dir():
                try:
                    return PackedImages(folder)
                except DamagedPack as err:
                    log.warning("pack %s is damaged (%s); rebuilding it", folder, err)
                    shutil.rmtree(folder)
            build(source, folder, workers or available_cpus())
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
        digest, labels, shape = hashlib.blake2b(digest_size=16), [], ()
        columns = (TextColumn("packing {task.description}"), BarColumn(), MofNCompleteColumn(), Rate())
        with open(tmp / IMAGES, "wb") as f, Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(source.name, total=source.total)
            for images, batch_labels in source.batches(workers):
                shape = tuple(images.shape[1:])
                data = images.contiguous().numpy()
                f.write(data.tobytes())
                digest.update(data.tobytes())
                labels.append(batch_labels.numpy().astype(np.int64))
                bar.advance(task, len(images))
            f.flush()
            os.fsync(f.fileno())
        if not labels:
            what = source.origin or source.name
            raise GanforgeError(f"no image of {what} could be decoded; check data.data_dir")
        labels_array = np.concatenate(labels)
        digest.update(labels_array.tobytes())
        np.save(tmp / LABELS, labels_array)
        seconds = time.perf_counter() - start
        manifest = {
            "format": FORMAT,
            "origin": source.origin,
            "identity": source.identity,
            "count": len(labels_array),
            "shape": list(shape),
            "digest": digest.hexdigest(),
            "skipped": (source.total or len(labels_array)) - len(labels_array),
            "build seconds": round(seconds, 2),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        tmp.rename(folder)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = None if isinstance(err, GanforgeError) else os_error(err)  # not a decoding error: a write
        if cause is not None:
            raise write_error(tmp / IMAGES, cause) from err
        raise
    rate = len(labels_array) / max(seconds, 1e-9)
    log.info("packed %d images in %.1f s (%.0f images/s)", len(labels_array), seconds, rate)
