"""On-disk caches (trained classifiers, reference features): content keys (`fingerprint` hashes a data
set), entries that heal when a file is damaged, and a lock so that simultaneous runs compute an entry once."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch.utils.data import Dataset, Subset, TensorDataset

log = logging.getLogger(__name__)


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything the cached value depends on."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=8).hexdigest()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `<path>.lock` while an entry is read or computed: a second run waits for the first and
    then reads what it wrote, instead of computing (or training) the same entry again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        yield


def load_entry(path: Path, valid: Callable[[Any], bool]) -> Any | None:
    """The cached value at `path`; None when it is missing, or damaged (unreadable, or not what
    `valid` expects): a damaged entry is removed, with a warning, so the caller recomputes it."""
    if not path.is_file():
        return None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
    else:
        if valid(value):
            return value
        reason = "unexpected contents"
    log.warning("cache entry %s is damaged (%s); removed, computing it again", path, reason)
    path.unlink(missing_ok=True)
    return None


def fingerprint(dataset: Dataset, chunk_bytes: int = 1 << 20) -> str:
    """A content hash of a data set: caches keyed by it are never reused for changed data."""
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(dataset, TensorDataset):
        for t in dataset.tensors:
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            flat = t.contiguous().view(-1).view(torch.uint8)  # the same bytes, no copy
            for chunk in flat.split(chunk_bytes):
                digest.update(chunk.numpy())
    elif isinstance(dataset, Subset):
        digest.update(fingerprint(dataset.dataset).encode())
        digest.update(torch.as_tensor(dataset.indices).numpy().tobytes())
    elif hasattr(dataset, "fingerprint"):
        digest.update(dataset.fingerprint().encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(dataset).__name__}")
    return digest.hexdigest()
