"""A callback for bench/startup.py: prints the wall-clock time of the first training batch."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer


class FirstStep(Callback):
    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, *args: object) -> None:
        if trainer.global_step == 0:
            print(f"FIRST_STEP {time.time():.3f}", flush=True)
