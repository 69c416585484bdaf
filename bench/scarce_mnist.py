"""Synthetic data for scarce MNIST: the whole chain, and the CAS of a GAN trained on the full set.

    .venv/bin/python bench/scarce_mnist.py --data-dir <folder holding MNIST/raw> \
        [--full-ckpt <cDCGAN checkpoint trained on the full set>] [--set key=value ...]

1. `train.py experiment=scarce_mnist`: a conditional DCGAN (DiffAugment) trained on 1% of the training
   images (600, 60 per class), a synthetic set exported from its best checkpoint, and the downstream
   classifier on real / real + synthetic at each ratio / synthetic only, over the configured seeds.
2. With `--full-ckpt`: `generate.py` (10,000 samples) + `augment.py data=mnist ratios=[]`: the
   Classification Accuracy Score of a GAN trained on all the training images, beside the real-data row.
Outputs go under logs/bench/; the summary tables are printed as markdown.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "logs" / "bench"


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *cmd], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return (time.perf_counter() - start) / 60


def table(summary: Path, title: str, minutes: float) -> None:
    print(f"\n{title} ({minutes:.1f} min)\n")
    print("| training set | real images | synthetic images | seeds | real test accuracy |")
    print("|---|---|---|---|---|")
    for r in csv.DictReader(summary.open()):
        mean, std = float(r["mean"]), float(r["std"])
        print(f"| {r['setting']} | {r['real images']} | {r['synthetic images']} | {r['seeds']} | "
              f"{100 * mean:.2f} ± {100 * std:.2f} % |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--full-ckpt", help="a conditional GAN checkpoint trained on the full training set")
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for the chain")
    parser.add_argument("--skip-chain", action="store_true", help="only the full-set CAS")
    parser.add_argument("--tag", default="", help="suffix for the chain's folder, to keep variants apart")
    args = parser.parse_args()
    data = f"paths.data_dir={args.data_dir}"

    if not args.skip_chain:
        chain = OUT / f"scarce_mnist{args.tag}"
        minutes = run([
            "train.py", "experiment=scarce_mnist", data, "callbacks.rich_progress_bar=null",
            "extras.print_config=false", "task_name=bench", f"hydra.run.dir={chain}", *args.set,
        ])  # fmt: skip
        table(
            chain / "augment" / "summary.csv",
            "1% of MNIST (600 images): cDCGAN + DiffAugment on those only",
            minutes,
        )

    if args.full_ckpt:
        synthetic, results = OUT / "full_mnist_synthetic", OUT / "full_mnist_cas"
        shutil.rmtree(results, ignore_errors=True)
        minutes = run([
            "generate.py", f"ckpt_path={args.full_ckpt}", "num_samples=10000", f"out_dir={synthetic}",
            "overwrite=true", f"hydra.run.dir={OUT / 'full_mnist_generate'}",
        ])  # fmt: skip
        minutes += run(
            ["augment.py", data, f"synthetic_dir={synthetic}", "ratios=[]", f"hydra.run.dir={results}"]
        )
        table(results / "summary.csv", f"full MNIST: CAS of {args.full_ckpt}", minutes)


if __name__ == "__main__":
    main()
