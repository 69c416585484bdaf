"""Image models on MNIST, several seeds: classifier-feature FID and classes covered at one G-step budget.

    .venv/bin/python bench/mnist_fid.py --data-dir <folder holding MNIST/raw> --models dcgan lsgan \
        --seeds 0 1 2 --g-steps 1000

Runs `train.py experiment=dcgan_mnist model=<model>` once per (model, seed) with outputs under
logs/bench/, then prints per model the final and best values (mean ± std over seeds), the wall time
per run, and the curve of val/fid and val/classes_covered (class accuracy for conditional models).
`--set` passes extra overrides to every run (`--tag` keeps their folders apart); `--report-only`
summarises runs already there.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("val/class_accuracy", "val/class_diversity")


def run(model: str, seed: int, args: argparse.Namespace) -> tuple[Path, float]:
    out = ROOT / "logs" / "bench" / f"mnist_fid_{model}{args.tag}_seed{seed}"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "experiment=dcgan_mnist", f"model={model}",
        f"seed={seed}", f"max_g_steps={args.g_steps}", f"paths.data_dir={args.data_dir}",
        f"callbacks.sample_quality.every_n_g_steps={args.every}", f"metrics.num_samples={args.num_samples}",
        "callbacks.rich_progress_bar=null", "extras.print_config=false", "task_name=bench",
        f"hydra.run.dir={out}", *args.set,
    ]  # fmt: skip
    if args.report_only:
        if not (out / "csv" / "metrics.csv").is_file():
            sys.exit(f"error: no run at {out}; run it first (drop --report-only) or check --tag/--seeds")
        return out / "csv" / "metrics.csv", float("nan")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "csv" / "metrics.csv", time.perf_counter() - start


def curve(metrics_csv: Path) -> list[dict[str, float]]:
    """The evaluations of a run; OPTIONAL metrics are NaN where not logged (class accuracy: conditional
    models only; class diversity: runs made before it existed)."""
    rows = list(csv.DictReader(metrics_csv.open()))
    keys = ("g_step", "val/fid", "val/classes_covered", "val/class_kl")
    return [
        {**{k: float(r[k]) for k in keys}, **{k: float(r.get(k) or "nan") for k in OPTIONAL}}
        for r in rows
        if r.get("val/fid")
    ]


def mean_std(values: list[float]) -> str:
    if any(math.isnan(v) for v in values):
        return "n/a"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--models", nargs="+", default=["dcgan"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--g-steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--report-only", action="store_true", help="summarise the runs already in logs/bench")
    parser.add_argument("--tag", default="", help="suffix for the run folders, to keep variants apart")
    args = parser.parse_args()

    header = (
        "| model | seeds | G steps | final val/fid | best val/fid | final classes covered "
        "| final class KL | final class accuracy | final class diversity | minutes per run |"
    )
    print(header + "\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
    curves: dict[str, dict[int, list[dict[str, float]]]] = {}
    for model in args.models:
        runs = {seed: run(model, seed, args) for seed in args.seeds}
        curves[model] = {seed: curve(path) for seed, (path, _) in runs.items()}
        final = [c[-1] for c in curves[model].values()]
        print(
            f"| {model} | {len(final)} | {args.g_steps} | {mean_std([f['val/fid'] for f in final])} | "
            f"{mean_std([min(p['val/fid'] for p in c) for c in curves[model].values()])} | "
            f"{mean_std([f['val/classes_covered'] for f in final])} | "
            f"{mean_std([f['val/class_kl'] for f in final])} | "
            f"{mean_std([f['val/class_accuracy'] for f in final])} | "
            f"{mean_std([f['val/class_diversity'] for f in final])} | "
            f"{mean_std([seconds / 60 for _, seconds in runs.values()])} |",
            flush=True,
        )
    for model, by_seed in curves.items():
        print(f"\n{model}, curve (mean over seeds):\n\n| G step | val/fid | classes covered |\n|---|---|---|")
        for points in zip(*by_seed.values(), strict=True):
            fids = [p["val/fid"] for p in points]
            covered = [p["val/classes_covered"] for p in points]
            print(f"| {int(points[0]['g_step'])} | {mean_std(fids)} | {mean_std(covered)} |")


if __name__ == "__main__":
    main()
