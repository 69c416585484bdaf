"""The confidence filter with standard augmentation, on the digits scarcity curve's synthetic sets:
does a stricter filter plus augmentation beat real + augmentation? (Not one of the strategies; a
probe of what might be.)

    .venv/bin/python bench/filter_with_augmentation.py --sweep <scarcity_digits sweep dir> --per-class 5

Uses the experiment's settings (16x16, 900 test images, SmallCNN width 32, 300 steps, batch 64,
downstream seeds 0-4) and every GAN seed's export in the sweep dir; prints each row's mean accuracy
and its paired difference to real + augmentation.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ganforge.augment import load_synthetic, training_tensors
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.downstream import Downstream, confident, draw
from ganforge.metrics.classifier import accuracy

AUGMENTATION = {
    "_target_": "torchvision.transforms.v2.RandomAffine",
    "degrees": 10,
    "translate": [0.1, 0.1],
    "scale": [0.9, 1.1],
}
CLASSIFIER = {"width": 32, "feature_dim": 128, "steps": 300, "lr": 1e-3, "batch_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.99])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 1.0])
    args = parser.parse_args()
    dm = DigitsDataModule(image_size=16, test_fraction=0.5, train_per_class=args.per_class)
    dm.setup()
    real = training_tensors(dm.data_train)
    augmentation = instantiate(OmegaConf.create(AUGMENTATION))
    results: dict[str, list[float]] = {}
    for job in sorted(args.sweep.glob(f"per_class={args.per_class},seed=*")):
        fake = load_synthetic(str(job / "synthetic"), dm)
        experiment = Downstream(real, fake, dm.data_test, 10, CLASSIFIER, torch.device("cpu"), augmentation)
        for seed in range(5):
            judge = experiment.fit(seed, real)
            row = {"real + augmentation": experiment.fit(seed, real, augmented=True)}
            for tau in args.taus:
                pool = confident(judge, fake, tau, experiment.device)
                for ratio in args.ratios:
                    picked = draw(pool, round(ratio * len(real[1])), seed, strict=False)
                    mixed = (torch.cat([real[0], picked[0]]), torch.cat([real[1], picked[1]]))
                    row[f"filtered p >= {tau:g} x{ratio:g} + augmentation"] = experiment.fit(
                        seed, mixed, augmented=True
                    )
            for name, model in row.items():
                results.setdefault(name, []).append(accuracy(model, dm.data_test, experiment.device))
            print(job.name, seed, {k: round(v[-1], 4) for k, v in results.items()}, flush=True)
    base = results["real + augmentation"]
    for name, values in results.items():
        diffs = [a - b for a, b in zip(values, base, strict=True)]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        mean, diff = statistics.fmean(values), statistics.fmean(diffs)
        print(f"| {name} | {mean:.4f} | {diff:+.4f} (sd {spread:.4f}) |")


if __name__ == "__main__":
    main()
