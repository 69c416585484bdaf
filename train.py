"""Train a GAN: `python train.py [model=dcgan] [data=digits] [experiment=...] [key=value ...]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganforge.config import prepare_hydra
from ganforge.train import main as train_main

os.environ.setdefault("GANFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train_main(cfg)


if __name__ == "__main__":
    prepare_hydra()  # ganforge's resolvers, before Hydra composes
    main()
