"""Stop a run whose losses or weights explode while they are still finite (a learning rate of 1e6
drives weights to 1e31 without a single NaN), before such weights reach a checkpoint.

Checked every `trainer.log_every_n_steps` batches, when the statistics are read back anyway (or
every `every_n_g_steps` generator steps when set; one host read-back for all tensors), and before
every checkpoint is written. Losses are bounded by their largest value since the last check (the
module's on-device statistics); NaN and inf losses are raised by the module every logging interval,
and by this check too, before a checkpoint.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.gan_module import GANLitModule
from ganforge.peaks import peak_magnitudes


class DivergenceGuard(Callback):
    def __init__(
        self, max_abs_loss: float = 1e4, max_abs_weight: float = 1e4, every_n_g_steps: int | None = None
    ) -> None:
        for name, value in (("max_abs_loss", max_abs_loss), ("max_abs_weight", max_abs_weight)):
            if not value > 0:
                raise GanforgeError(f"callbacks.divergence_guard.{name} must be > 0 (e.g. 1e4), got {value}")
        if every_n_g_steps is not None and every_n_g_steps < 1:
            raise GanforgeError(
                f"callbacks.divergence_guard.every_n_g_steps must be >= 1 or null, got {every_n_g_steps}"
            )
        self.max_abs_loss = max_abs_loss
        self.max_abs_weight = max_abs_weight
        self.every_n_g_steps = every_n_g_steps
        self._checked_g_step: int | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        g = pl_module.g_step
        if self.every_n_g_steps is None:
            due = pl_module.d_step % trainer.log_every_n_steps == 0
        else:
            due = g % self.every_n_g_steps == 0 and g != self._checked_g_step
        if due:
            self._checked_g_step = g
            self.check(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: Trainer, module: GANLitModule) -> None:
        """Raise on every rank when any rank diverged (losses differ between DDP ranks)."""
        module.raise_if_diverged()  # a NaN or inf loss since the last logging interval
        problem = self.problem(module)
        if trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
            raise TrainingDiverged(
                f"training diverged at g_step {module.g_step}: {problem or 'on another rank'}"
            )

    def problem(self, module: GANLitModule) -> str | None:
        """What exceeds its bound, or None: the losses' peaks since the last check (from the
        module's statistics) and every weight's, in one fused pass and one read-back."""
        losses = {k: v for k, v in module.stats.take_peaks().items() if k.endswith("_loss")}
        named = [
            (n, t)
            for n, t in chain(module.named_parameters(), module.named_buffers())
            if t.is_floating_point()
        ]
        weights = peak_magnitudes([t for _, t in named])
        for name, peak in losses.items():
            if peak > self.max_abs_loss:
                return (
                    f"train/{name} reached {peak:.3g}, beyond "
                    f"callbacks.divergence_guard.max_abs_loss={self.max_abs_loss:g}"
                )
        worst = max(
            range(len(named)), key=lambda i: math.inf if math.isnan(weights[i]) else weights[i], default=None
        )
        if worst is not None and not weights[worst] <= self.max_abs_weight:
            return (
                f"|{named[worst][0]}| reached {weights[worst]:.3g}, beyond "
                f"callbacks.divergence_guard.max_abs_weight={self.max_abs_weight:g}"
            )
        return None
