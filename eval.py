"""Evaluate a checkpoint: `python eval.py ckpt_path=<ckpt> [metrics=...] [metrics.num_samples=N]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganforge.config import run_app
from ganforge.evaluate import main as eval_main

os.environ.setdefault("GANFORGE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> dict[str, float]:
    return eval_main(cfg)


if __name__ == "__main__":
    run_app(main, Path(__file__).resolve().parent / "conf", "eval")
