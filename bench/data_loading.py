"""Loader throughput: CelebA decoded once into a uint8 tensor vs decoded per item, every epoch.

    .venv/bin/python bench/data_loading.py --celeba ../shared/datasets/celeba --epochs 3

Copies nothing and writes nothing; reads the JPEGs in place. Prints images/s per epoch and the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from ganforge.datamodules.celeba import CelebADataModule


def images_per_second(dm: CelebADataModule, epochs: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    rates = []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for images, _ in dm.train_dataloader():
            n += images.shape[0]
            dm.on_after_batch_transfer((images, torch.zeros(1)), 0)
        rates.append(n / (time.perf_counter() - start))
    return setup_s, rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", required=True, help="folder holding img_align_celeba/")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    results = {}
    for in_memory in (True, False):
        dm = CelebADataModule(
            args.celeba,
            image_size=args.image_size,
            in_memory=in_memory,
            batch_size=128,
            num_workers=args.workers,
        )
        setup_s, rates = images_per_second(dm, args.epochs)
        results[in_memory] = rates
        label = "in memory" if in_memory else "per item "
        print(f"{label}: setup {setup_s:6.2f} s, epochs {', '.join(f'{r:8.0f}' for r in rates)} images/s")
    steady = [sorted(results[m])[len(results[m]) // 2] for m in (True, False)]
    print(f"median epoch speed-up of in-memory over per-item decoding: {steady[0] / steady[1]:.1f}x")


if __name__ == "__main__":
    main()
