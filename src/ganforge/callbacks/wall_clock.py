"""Periodic work by wall time as well as by generator steps.

A count of steps tuned on a CPU (a step there takes a few hundred milliseconds) comes ~30 times sooner
on a GPU: `last.ckpt` every 50 steps would be a write a second, an evaluation every 250 steps one
every few seconds. A `WallClock` says when `minutes` have passed since the work was last done. It
reads the clock only every `trainer.log_every_n_steps` batches, the same batches on every rank, and
the ranks of a multi-process run agree with one reduce there (any rank's clock suffices): never a
collective per batch, and every rank does the work at the same batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lightning.pytorch import LightningModule, Trainer

from ganforge.errors import GanforgeError


class WallClock:
    def __init__(self, minutes: float | None, key: str) -> None:
        if minutes is not None and not minutes > 0:
            raise GanforgeError(f"{key} must be > 0 (e.g. 10) or null, got {minutes}")
        self.minutes = minutes
        self.clock: Callable[[], float] = time.monotonic  # a test's fake clock replaces it
        self._since = 0.0

    def restart(self) -> None:
        """The work was just done (or training starts): count from now."""
        self._since = self.clock()

    def due(self, trainer: Trainer, module: LightningModule) -> bool:
        if self.minutes is None or module.d_step % trainer.log_every_n_steps:
            return False
        late = self.clock() - self._since >= 60 * self.minutes
        return trainer.strategy.reduce_boolean_decision(late, all=False)
