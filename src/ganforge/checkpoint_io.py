"""The trainer's checkpoint writer: atomic, and never writes a non-finite tensor.

A run that diverges between two checkpoints would otherwise overwrite the last good `last.ckpt`
with one that resumes straight into NaN. The training state (weights, buffers, EMA, optimizer
moments) is checked before the write, in one fused pass and one read-back (ganforge.peaks). (Callback states
may hold inf legitimately, e.g. ModelCheckpoint's `kth_value` before any score.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ganforge.atomic import atomic_save
from ganforge.checkpoint_layout import STEPS
from ganforge.errors import TrainingDiverged
from ganforge.peaks import peak_magnitudes


def floating_tensors(obj: Any, where: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(key path, tensor) of every floating-point tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield where or "tensor", obj
        return
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        yield from floating_tensors(value, f"{where}.{key}" if where else str(key))


def first_non_finite(obj: Any) -> str | None:
    """The key path of the first floating-point tensor in `obj` holding NaN or inf, else None."""
    named = list(floating_tensors(obj))
    peaks = peak_magnitudes([t for _, t in named])
    return next((name for (name, _), peak in zip(named, peaks, strict=True) if not math.isfinite(peak)), None)


TRAINING_STATE = ("state_dict", "optimizer_states")


class SafeCheckpointIO(TorchCheckpointIO):
    def __init__(self) -> None:
        self.last_written: Path | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        bad = first_non_finite({k: checkpoint.get(k) for k in TRAINING_STATE})
        if bad is not None:
            g_step = checkpoint.get(STEPS, {}).get("g_step", "?")
            raise TrainingDiverged(f"training diverged: {bad} is not finite at g_step {g_step}")
        atomic_save(checkpoint, path)
        self.last_written = Path(path)
