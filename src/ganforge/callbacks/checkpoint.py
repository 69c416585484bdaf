"""Lightning's ModelCheckpoint, counted in generator steps, with a `last.ckpt` that is always recent
and always written at a batch boundary, so resuming from it continues exactly.

- `g_step_NNNNNNN.ckpt` every `every_n_g_steps` generator steps (kept);
- `last.ckpt` every `last_every_n_g_steps` (overwritten: a crash loses minutes, not hours), at the
  final step, and when SIGTERM or Ctrl-C stops the run (after the step in progress).

Lightning's own end-of-training save comes after the fit loop has counted a stopped epoch as
finished; a checkpoint from there resumes one epoch ahead, so the final save happens here instead.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ganforge.errors import GanforgeError


class GANCheckpoint(ModelCheckpoint):
    def __init__(self, every_n_g_steps: int = 500, last_every_n_g_steps: int = 50, **kwargs: Any) -> None:
        for name, value in (
            ("every_n_g_steps", every_n_g_steps),
            ("last_every_n_g_steps", last_every_n_g_steps),
        ):
            if value < 1:
                raise GanforgeError(f"callbacks.model_checkpoint.{name} must be >= 1, got {value}")
        kwargs.setdefault("save_top_k", -1)
        # the triggers are generator steps, counted here: Lightning's own (optimizer steps, epochs) are off
        super().__init__(
            save_last=True, every_n_train_steps=0, every_n_epochs=0, save_on_train_epoch_end=False, **kwargs
        )
        self.every_n_g_steps = every_n_g_steps
        self.last_every_n_g_steps = last_every_n_g_steps
        self._saved_g_step: int | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        g = pl_module.g_step
        if g == 0 or g == self._saved_g_step or pl_module.d_step % pl_module.d_steps_per_g:
            return  # nothing new, or a discriminator-only batch
        final = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        numbered = g % self.every_n_g_steps == 0
        if not (numbered or final or g % self.last_every_n_g_steps == 0):
            return
        self.save(trainer, numbered=numbered)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """SIGTERM (and Ctrl-C, which ganforge turns into the same path) stops the loop after a batch."""
        if isinstance(exception, SIGTERMException) and pl_module.g_step != self._saved_g_step:
            self.save(trainer, numbered=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A budget in epochs ends at an epoch boundary: the state after it is the last one."""
        if pl_module.g_step != self._saved_g_step:
            self.save(trainer, numbered=False)

    def save(self, trainer: Trainer, numbered: bool) -> None:
        candidates = self._monitor_candidates(trainer)
        if numbered:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._saved_g_step = trainer.lightning_module.g_step
