"""Hydra callback: this machine's own settings (conf/local/<name>.yaml, conf/local/README.md) belong at
the top of the config. Without `# @package _global_` as its first line, Hydra reads the file into a
`local:` node that nothing reads, and every setting in it would be ignored without a word."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PACKAGE_LINE = "# @package _global_"


def warn_if_ignored(config: DictConfig) -> None:
    """One warning, naming the file and the line to add, when a conf/local file landed under `local:`."""
    if not config.get("local") or rank_zero_only.rank != 0:
        return
    name = OmegaConf.select(config, "hydra.runtime.choices.local", default="default")
    log.warning(
        "conf/local/%s.yaml is ignored: without `%s` as its first line its settings (%s) went under "
        "`local:`; add that line at its top",
        name, PACKAGE_LINE, ", ".join(map(str, config.local)),
    )  # fmt: skip


class CheckLocalConfig(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        warn_if_ignored(config)  # after Hydra set up logging: the line reaches the console and the run's log
