"""The training config as `python train.py <overrides>` composes it, for benchmarks that call
`ganforge.train.train` in-process."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ganforge.config import compose_app_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def train_config(overrides: list[str], output_dir: Path) -> DictConfig:
    return compose_app_config(CONF, overrides, output_dir)
