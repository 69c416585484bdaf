"""Lightning's rich progress bar, with epoch totals that fit a GAN's step accounting, and metrics
read back only at logging steps.

Lightning sizes the bar as if each batch took one optimizer step; a GAN takes d_steps_per_g + 1
optimizer steps per d_steps_per_g batches, so the stock bar never fills when a step budget ends a run.
Nothing is logged with `prog_bar=True`: Lightning turns every such metric into a Python number
after every batch, which on a GPU waits for the step to finish. The bar shows the module's last
logging interval instead (its means, already on the host), and redraws them at logging steps only.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar

from ganforge.gan_module import GANLitModule


class GANProgressBar(RichProgressBar):
    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        module = trainer.lightning_module
        if trainer.max_steps > 0 and isinstance(module, GANLitModule):
            k = module.d_steps_per_g
            remaining = (trainer.max_steps - trainer.global_step) * k // (k + 1)
            return min(trainer.num_training_batches, remaining)
        return trainer.num_training_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs == -1:  # step budget: no "Epoch 3/-2"
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        logged = pl_module.logged if isinstance(pl_module, GANLitModule) else {}
        shown = {k.removeprefix("train/"): v for k, v in logged.items() if k != "g_step"}
        g_step = {"g_step": str(int(logged["g_step"]))} if "g_step" in logged else {}  # not "49.000"
        return super().get_metrics(trainer, pl_module) | g_step | shown

    def _update_metrics(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batches = pl_module.d_step if isinstance(pl_module, GANLitModule) else trainer.global_step
        last = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if trainer.training and batches % trainer.log_every_n_steps and not last:
            return
        super()._update_metrics(trainer, pl_module)
