"""Does a conditional generator use its noise? Within-class diversity of generated vs real images.

    .venv/bin/python bench/conditional_diversity.py --data-dir <folder holding MNIST/raw> <ckpt> [<ckpt> ...]

For each class, 100 samples with different noise are compared with 100 real test images of that class:
mean pairwise distance among the generated ones / among the real ones, in the metric classifier's
feature space (cached by training or eval) and in pixels. 1 means as varied as the real data; near 0
means the generator ignores its noise and draws one image per class (a collapse that class accuracy
and class coverage cannot see).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ganforge.checkpoint import load_checkpoint, load_model, stored_config
from ganforge.config import instantiate
from ganforge.datamodules.base import to_signed_unit
from ganforge.metrics.features import classifier_features

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def diversity(ckpt: str, data_dir: str, per_class: int = 100) -> tuple[float, float]:
    checkpoint = load_checkpoint(ckpt)
    config = stored_config(checkpoint)
    model = load_model(checkpoint, torch.device("cpu"))
    config.data.data_dir = data_dir
    data = instantiate(config.data)
    data.setup("fit")
    settings = OmegaConf.to_container(config.metrics.classifier, resolve=True)
    features = classifier_features(data, settings, str(ROOT / "cache"), torch.device("cpu"))
    images, labels = data.data_test.tensors
    noise = torch.Generator().manual_seed(0)
    ratios: dict[str, list[float]] = {"features": [], "pixels": []}
    for c in range(model.num_classes):
        real = to_signed_unit(images[labels == c][:per_class])
        fake = model.generate(
            torch.randn(per_class, model.latent_dim, generator=noise), torch.full((per_class,), c)
        )
        for space, embed in (("features", lambda x: features(x)[0]), ("pixels", lambda x: x.flatten(1))):
            ratios[space].append((torch.pdist(embed(fake)).mean() / torch.pdist(embed(real)).mean()).item())
    return statistics.mean(ratios["features"]), statistics.mean(ratios["pixels"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("ckpts", nargs="+")
    args = parser.parse_args()
    print("| checkpoint | within-class diversity, classifier features | in pixels |\n|---|---|---|")
    for ckpt in args.ckpts:
        feats, pixels = diversity(ckpt, args.data_dir)
        print(f"| {ckpt} | {feats:.2f} | {pixels:.2f} |", flush=True)


if __name__ == "__main__":
    main()
