"""Export a labelled synthetic data set: `python generate.py ckpt_path=<ckpt> num_samples=N out_dir=<dir>`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganforge.config import run_app
from ganforge.generate import main as generate_main

os.environ.setdefault("GANFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    generate_main(cfg)


if __name__ == "__main__":
    run_app(main, Path(__file__).resolve().parent / "conf", "generate")
