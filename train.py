"""Train a GAN: `python train.py [model=dcgan] [data=digits] [experiment=...] [key=value ...]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganforge.config import run_app
from ganforge.train import main as train_main

os.environ.setdefault("GANFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train_main(cfg)


if __name__ == "__main__":
    run_app(main, Path(__file__).resolve().parent / "conf", "train")
