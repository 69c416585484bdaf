"""Write the run's resolved config into every checkpoint, so a checkpoint alone can rebuild its model."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf

from ganforge import __version__
from ganforge.checkpoint_layout import CONFIG


class StoreConfig(Callback):
    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG] = {"config": self.config, "version": __version__}
