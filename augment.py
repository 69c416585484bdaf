"""Measure what synthetic data is worth:
`python augment.py data=mnist data.train_fraction=0.01 synthetic_dir=<generate.py export>`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganforge.augment import main as augment_main
from ganforge.config import run_app

os.environ.setdefault("GANFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="augment")
def main(cfg: DictConfig) -> None:
    augment_main(cfg)


if __name__ == "__main__":
    run_app(main, Path(__file__).resolve().parent / "conf", "augment")
