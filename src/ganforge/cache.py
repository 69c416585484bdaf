"""On-disk caches (trained classifiers, reference statistics): content keys and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything the cached value depends on."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=8).hexdigest()


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save via a temporary file, so concurrent runs never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
