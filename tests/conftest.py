"""Config composition for tests: the real conf/ through Hydra's compose API, outputs in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import ganforge.config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

ganforge.config.register_resolvers()

# Small networks and budgets: real training, seconds on a 2-core CPU.
FAST = [
    "data.image_size=16",
    "data.batch_size=16",
    "max_g_steps=4",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "extras.print_config=false",
]

SMALL_NETWORKS = {
    "dcgan": ["model.generator.base_channels=8", "model.discriminator.base_channels=8"],
    "mlp": ["model.generator.hidden_dims=[32,64,64]", "model.discriminator.hidden_dims=[64,32]"],
}


def compose_train(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The `train` config as `python train.py <overrides>` would build it (hydra node removed)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_train with logs, data and outputs under tmp_path and the FAST settings first."""

    def make(*overrides: str, fast: bool = True, run: str = "run") -> DictConfig:
        out = tmp_path / run
        base = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "dcgan")
        small = [*FAST, *SMALL_NETWORKS[model]] if fast else []
        return compose_train([*base, *small, *overrides], output_dir=out)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def project_env() -> dict[str, str]:
    """Environment for running the entry scripts as subprocesses (quiet, CPU-only)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
