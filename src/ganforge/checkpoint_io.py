"""The trainer's checkpoint writer: atomic, and never writes a non-finite tensor.

A run that diverges between two checkpoints would otherwise overwrite the last good `last.ckpt`
with one that resumes straight into NaN. The training state (weights, buffers, EMA, optimizer
moments) is checked before the write, which costs little next to the write itself. (Callback states
may hold inf legitimately, e.g. ModelCheckpoint's `kth_value` before any score.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from ganforge.atomic import atomic_save
from ganforge.checkpoint_layout import STEPS
from ganforge.errors import TrainingDiverged


def first_non_finite(obj: Any, where: str = "") -> str | None:
    """The key path of the first floating-point tensor in `obj` holding NaN or inf, else None."""
    if isinstance(obj, torch.Tensor):
        finite = not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        return None if finite else where or "tensor"
    if obj is None:
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


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
