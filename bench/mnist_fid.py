"""DCGAN on MNIST, several seeds: classifier-feature FID and classes covered over a fixed budget.

    .venv/bin/python bench/mnist_fid.py --data-dir <folder holding MNIST/raw> --seeds 0 1 2 --g-steps 2000

Runs `train.py experiment=dcgan_mnist` once per seed (outputs under logs/bench/), then prints the
final and best values (mean ± std over seeds) and the curve of val/fid and val/classes_covered.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(seed: int, args: argparse.Namespace) -> Path:
    out = ROOT / "logs" / "bench" / f"mnist_fid_{args.model}_seed{seed}"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "experiment=dcgan_mnist", f"model={args.model}",
        f"seed={seed}", f"max_g_steps={args.g_steps}", f"paths.data_dir={args.data_dir}",
        f"callbacks.sample_quality.every_n_g_steps={args.every}", f"metrics.num_samples={args.num_samples}",
        "extras.print_config=false", "task_name=bench", f"hydra.run.dir={out}",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "csv" / "metrics.csv"


def curve(metrics_csv: Path) -> list[dict[str, float]]:
    rows = list(csv.DictReader(metrics_csv.open()))
    keys = ("g_step", "val/fid", "val/classes_covered", "val/class_kl")
    return [{k: float(r[k]) for k in keys} for r in rows if r.get("val/fid")]


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--g-steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--model", default="dcgan")
    args = parser.parse_args()

    curves = {seed: curve(run(seed, args)) for seed in args.seeds}
    final = [c[-1] for c in curves.values()]
    print(
        "| model | seeds | G steps | final val/fid | best val/fid | final classes covered | final class KL |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {len(curves)} | {args.g_steps} | {mean_std([f['val/fid'] for f in final])} | "
        f"{mean_std([min(p['val/fid'] for p in c) for c in curves.values()])} | "
        f"{mean_std([f['val/classes_covered'] for f in final])} | "
        f"{mean_std([f['val/class_kl'] for f in final])} |"
    )
    print("\ncurve (mean over seeds):\n\n| G step | val/fid | classes covered |\n|---|---|---|")
    for points in zip(*curves.values(), strict=True):
        fids = [p["val/fid"] for p in points]
        covered = [p["val/classes_covered"] for p in points]
        print(f"| {int(points[0]['g_step'])} | {mean_std(fids)} | {mean_std(covered)} |")


if __name__ == "__main__":
    main()
