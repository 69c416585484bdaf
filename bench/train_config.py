"""The training config as `python train.py <overrides>` composes it, for benchmarks that call
`ganforge.train.train` in-process (the Hydra app is not running, so HydraConfig is set here)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from ganforge.config import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"


def train_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """Composed from conf/, writing into `output_dir`; the hydra node removed, as a task sees it."""
    register_resolvers()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
