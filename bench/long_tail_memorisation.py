"""Does a long-tail GAN copy its rare classes? Nearest real training image of each synthetic sample.

    .venv/bin/python bench/long_tail_memorisation.py --data-dir <folder holding MNIST/raw> <job dir> [...]

For a job of `experiment=long_tail_mnist` (its `synthetic/` export and the checkpoint it came from),
per class: the pixel distance from each synthetic sample to its nearest training image of that class,
against the same distance for real test images (new real images of the class, never trained on).
A ratio near 1 means the samples are as new as fresh real images; far below 1, the GAN reproduces
its training images. `near copies` is the share of samples closer to a training image than the
closest 5% of test images are; `images hit` is how many of the class's training images are some
sample's nearest one (a GAN that varies a few of them hits few), against the share test images hit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from ganforge.augment import load_synthetic, training_tensors
from ganforge.checkpoint import load_checkpoint, stored_config
from ganforge.config import instantiate


def nearest(queries: Tensor, pool: Tensor) -> tuple[Tensor, Tensor]:
    """Distance to and index of each query's nearest image in `pool` (flattened pixels in [0, 1])."""
    found = [torch.cdist(q, pool).min(dim=1) for q in queries.split(1024)]
    return torch.cat([d.values for d in found]), torch.cat([d.indices for d in found])


def flat(images: Tensor) -> Tensor:
    return images.flatten(1).float() / 255


@torch.no_grad()
def memorisation(job: Path, data_dir: str, per_class: int) -> list[dict[str, float]]:
    manifest = json.loads((job / "synthetic" / "manifest.json").read_text())
    ckpt = job / "checkpoints" / Path(manifest["checkpoint"]["path"]).name  # the job dir may have moved
    config = stored_config(load_checkpoint(ckpt))
    config.data.data_dir = data_dir
    data = instantiate(config.data)
    data.prepare_data()
    data.setup("fit")
    train_images, train_labels = training_tensors(data.data_train)
    test_images, test_labels = training_tensors(data.data_test)
    fake_images, fake_labels = load_synthetic(str(job / "synthetic"), data)
    rows = []
    for c in range(data.num_classes):
        pool = flat(train_images[train_labels == c])
        real_d, real_hit = nearest(flat(test_images[test_labels == c][:per_class]), pool)
        fake_d, hit = nearest(flat(fake_images[fake_labels == c][:per_class]), pool)
        rows.append(
            {
                "class": c,
                "train images": len(pool),
                "test to train": real_d.median().item(),
                "samples to train": fake_d.median().item(),
                "ratio": (fake_d.median() / real_d.median()).item(),
                "near copies": (fake_d < real_d.quantile(0.05)).float().mean().item(),
                "images hit": len(hit.unique()) / len(pool),
                "images hit by test": len(real_hit.unique()) / len(pool),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", type=Path)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--per-class", type=int, default=500, help="samples and test images per class")
    args = parser.parse_args()
    for job in args.jobs:
        rows = memorisation(job, args.data_dir, args.per_class)
        print(f"\n{job}\n| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
        for row in rows:
            cells = (f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values())
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
