"""Learning rates in the same logged row as the losses and `g_step`.

Lightning's LearningRateMonitor hands its values to the loggers itself, as rows of their own: in
metrics.csv and W&B those rows had no `g_step`, so learning rates could not be plotted against
generator steps. This one reads the same values under the same names (`lr-Adam/generator`,
`lr-Adam-1/discriminator`) at the same logging steps, and logs them through the module, into the row
that Lightning writes for the batch.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor


class GANLearningRateMonitor(LearningRateMonitor):
    def __init__(self, log_momentum: bool = False, log_weight_decay: bool = False) -> None:
        # per logging step only: an epoch-interval value would be a row without g_step again
        super().__init__("step", log_momentum, log_weight_decay)
        self._rates: dict[str, float] = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """The rates this batch's updates use, read where Lightning's monitor reads them (host floats)."""
        # Lightning writes a row after this batch (the batch counts alike; Lightning's own
        # `should_update_logs` costs ~200 Python calls a batch)
        if (pl_module.d_step + 1) % trainer.log_every_n_steps == 0:
            self._rates = self._extract_stats(trainer, "any")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """Logged with the module's statistics, at the batch's end: between two logging steps a batch
        makes no tensor (a host-to-device copy) for the loggers."""
        if self._rates:
            pl_module.log_dict(self._rates, on_step=True, on_epoch=False)
            self._rates = {}
