"""Stop a run whose losses or weights explode while they are still finite (a learning rate of 1e6
drives weights to 1e31 without a single NaN), before such weights reach a checkpoint.

Checked every `every_n_g_steps` generator steps (one host read-back for all tensors) and before
every checkpoint is written. NaN and inf losses are noted on the device by the training step and
raised by the module every logging interval; this check raises them too, before a checkpoint.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.gan_module import GANLitModule


class DivergenceGuard(Callback):
    def __init__(
        self, max_abs_loss: float = 1e4, max_abs_weight: float = 1e4, every_n_g_steps: int = 10
    ) -> None:
        for name, value in (("max_abs_loss", max_abs_loss), ("max_abs_weight", max_abs_weight)):
            if not value > 0:
                raise GanforgeError(f"callbacks.divergence_guard.{name} must be > 0 (e.g. 1e4), got {value}")
        if every_n_g_steps < 1:
            raise GanforgeError(
                f"callbacks.divergence_guard.every_n_g_steps must be >= 1, got {every_n_g_steps}"
            )
        self.max_abs_loss = max_abs_loss
        self.max_abs_weight = max_abs_weight
        self.every_n_g_steps = every_n_g_steps
        self._checked_g_step: int | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        g = pl_module.g_step
        if g % self.every_n_g_steps == 0 and g != self._checked_g_step:
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
        """What exceeds its bound, or None (one host read-back for all tensors)."""
        losses = module.last_losses
        tensors = chain(module.named_parameters(), module.named_buffers())
        named = [(n, t) for n, t in tensors if t.is_floating_point()]
        peaks = torch.stack([t.detach().abs().max().float() for _, t in named] + [*losses.values()]).cpu()
        weights, loss_values = peaks[: len(named)], peaks[len(named) :].abs()
        if loss_values.numel() and not loss_values.max() <= self.max_abs_loss:
            i = int(torch.nan_to_num(loss_values, nan=math.inf).argmax())
            return (
                f"{list(losses)[i]} is {peaks[len(named) + i].item():.3g}, beyond "
                f"callbacks.divergence_guard.max_abs_loss={self.max_abs_loss:g}"
            )
        if not weights.max() <= self.max_abs_weight:
            i = int(torch.nan_to_num(weights, nan=math.inf).argmax())
            return (
                f"|{named[i][0]}| reached {weights[i].item():.3g}, beyond "
                f"callbacks.divergence_guard.max_abs_weight={self.max_abs_weight:g}"
            )
        return None
