"""Mode collapse on the 2-D mixtures: modes covered, high-quality % and reverse KL, mean ± std over seeds.

    .venv/bin/python bench/mode_collapse.py --seeds 0 1 2 3 4 --g-steps 8000

Runs `train.py data=<mixture> model=<model>` per (mixture, model, seed) with outputs under
logs/bench/, and prints a markdown table of the final evaluation (2,500 samples, PacGAN's protocol).
`--set` passes extra overrides to every run (e.g. a learning-rate schedule); `--tag` keeps their
folders apart.
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
KEYS = ("val/modes_covered", "val/high_quality", "val/reverse_kl")


def run(data: str, model: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    g_steps = args.g_steps
    out = ROOT / "logs" / "bench" / f"mode_collapse_{data}_{model}{args.tag}_seed{seed}"
    cmd = [
        sys.executable, str(ROOT / "train.py"), f"data={data}", f"model={model}", f"seed={seed}",
        f"data.seed={seed}", f"max_g_steps={g_steps}", "logger=csv", "metrics.num_samples=2500",
        f"callbacks.sample_quality.every_n_g_steps={g_steps}",
        f"callbacks.sample_grid.every_n_g_steps={g_steps}", "callbacks.rich_progress_bar=null",
        "optimized_metric=val/reverse_kl_best", "extras.print_config=false", "task_name=bench",
        f"hydra.run.dir={out}", *args.set,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [r for r in csv.DictReader((out / "csv" / "metrics.csv").open()) if r.get(KEYS[0])]
    return {**{k: float(rows[-1][k]) for k in KEYS}, "minutes": (time.perf_counter() - start) / 60}


def mean_std(values: list[float]) -> str:
    """mean ± std over the finite values; seeds with an infinite value (no high-quality sample at all,
    so reverse KL is undefined) are counted, not averaged away."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return f"inf ({len(values)}/{len(values)} seeds)"
    text = f"{statistics.mean(finite):.2f} ± {statistics.stdev(finite) if len(finite) > 1 else 0:.2f}"
    return text + (f" (+{len(values) - len(finite)} seeds inf)" if len(finite) < len(values) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["gaussians_grid", "gaussians_ring"])
    parser.add_argument("--models", nargs="+", default=["mlp_2d", "wgan_gp_2d", "sngan_2d", "pacgan_2d"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--g-steps", type=int, default=8000)
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--tag", default="", help="suffix for the run folders, to keep variants apart")
    args = parser.parse_args()

    print("| data | model | seeds | G steps | modes covered | high quality % | reverse KL | minutes/run |")
    print("|---|---|---|---|---|---|---|---|")
    for data in args.data:
        for model in args.models:
            results = [run(data, model, seed, args) for seed in args.seeds]
            cells = " | ".join(mean_std([r[k] for r in results]) for k in (*KEYS, "minutes"))
            print(f"| {data} | {model} | {len(results)} | {args.g_steps} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
