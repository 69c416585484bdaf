"""Measure the generator during training: every N generator steps and/or every N minutes
(ganforge.callbacks.wall_clock), and at the last step, generate
`metrics.num_samples` images, log `val/fid` (+ `val/kid`, `val/is`, `val/classes_covered`,
`val/class_kl` when on) and `val/fid_best` (what sweeps minimise); `BestCheckpoint` keeps the state
at the best value as `checkpoints/best.ckpt`.

It hooks only `on_train_batch_end`, after the optimizer steps: metrics never see a training step's
graph or a sanity-check batch, and the feature network lives here, outside the LightningModule,
so its weights never enter training checkpoints.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

from ganforge.callbacks.wall_clock import WallClock
from ganforge.gan_module import GANLitModule
from ganforge.metrics.base import SampleEvaluator
from ganforge.metrics.evaluator import build_evaluator

log = logging.getLogger(__name__)


class SampleQualityCallback(Callback):
    def __init__(
        self,
        metrics: DictConfig | dict[str, Any],
        every_n_g_steps: int | None = 250,
        every_n_minutes: float | None = None,
    ) -> None:
        self.settings = (
            OmegaConf.to_container(metrics, resolve=True) if isinstance(metrics, DictConfig) else metrics
        )
        self.every_n_g_steps = every_n_g_steps
        self.wall_clock = WallClock(every_n_minutes, "callbacks.sample_quality.every_n_minutes")
        self.evaluator: SampleEvaluator | None = None
        self.best_value = math.inf
        self.last_values: dict[str, float] = {}  # the latest evaluation (checkpointed: a restart knows it)
        self.last_g_step: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        device = trainer.strategy.root_device

        def build() -> SampleEvaluator | None:
            return build_evaluator(
                self.settings, trainer.datamodule, device, trainer.global_rank, trainer.world_size
            )

        # rank 0 trains the classifier / computes reference statistics and caches them; the others load
        if trainer.is_global_zero:
            self.evaluator = build()
        trainer.strategy.barrier("ganforge-sample-quality")
        if not trainer.is_global_zero:
            self.evaluator = build()
        if self.evaluator is not None and trainer.is_global_zero:
            log.info("sample-quality protocol: %s", self.evaluator.protocol)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.wall_clock.restart()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        module: GANLitModule = pl_module
        g = module.g_step
        last = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        by_steps = self.every_n_g_steps is not None and g % self.every_n_g_steps == 0
        if self.evaluator is None or g == 0 or g == self.last_g_step:
            return
        if not (by_steps or last or self.wall_clock.due(trainer, module)):
            return
        self.last_g_step = g
        self.wall_clock.restart()
        values = self.evaluator.evaluate(
            module, trainer.strategy.root_device, trainer.global_rank, trainer.world_size
        )
        primary = self.evaluator.primary  # fid for images, reverse_kl for the 2-D mixtures
        self.best_value = min(self.best_value, values[primary])
        logged = {f"val/{k}": v for k, v in values.items()} | {f"val/{primary}_best": self.best_value}
        self.last_values = {k: float(v) for k, v in logged.items()}
        # one row per evaluation in the loggers (Lightning's step column counts batches: d_step - 1);
        # self.log only feeds callback_metrics (sweeps, the return value) and the progress bar
        for logger in trainer.loggers:
            logger.log_metrics(logged | {"g_step": g}, step=module.d_step - 1)
        module.log_dict(logged, on_step=True, on_epoch=False, logger=False)  # BestCheckpoint reads these

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "last_values": self.last_values}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_value = state_dict["best_value"]
        self.last_values = state_dict.get("last_values", {})  # older checkpoints did not keep them
