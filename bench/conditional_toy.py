"""Conditional models on the 3-class toy set of the conditional test: does the generator make the class it
is asked for? Requested-class accuracy (the metrics classifier's verdict) per seed at one budget.

    .venv/bin/python bench/conditional_toy.py --models csngan --seeds 12345 1 2 3 4 5 --g-steps 600 \
        --set model.optimizer_g.lr=0.001 model.optimizer_d.lr=0.001

The set (PNG class folders, a bright square in one of three corners on dark noise, 16x16) is written
once to logs/bench/toy_shapes by the test suite's own generator; each (model, seed) trains small networks
with `train.py` under logs/bench/. Chance is 1/3: what a generator that ignores its labels scores.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import write_shapes  # noqa: E402  (the test's data, so the two measure the same thing)

SMALL = {  # the networks of tests/test_conditional.py
    "cdcgan": ["model.generator.base_channels=16", "model.discriminator.base_channels=16"],
    "csngan": ["model.generator.width=16", "model.discriminator.width=16"],
}


def run(model: str, seed: int, data: Path, args: argparse.Namespace) -> list[tuple[int, float]]:
    out = ROOT / "logs" / "bench" / f"conditional_toy_{model}{args.tag}_seed{seed}"
    cmd = [
        sys.executable, str(ROOT / "train.py"), f"model={model}", "model.num_classes=3", *SMALL[model],
        "data=image_folder", f"data.data_dir={data}", "data.channels=1", "data.image_size=16",
        "data.val_fraction=0.1", "data.test_fraction=0.2", "data.num_workers=0", "data.batch_size=32",
        f"seed={seed}", f"max_g_steps={args.g_steps}", "trainer.accelerator=cpu", "logger=csv",
        "trainer.enable_model_summary=false", "metrics.num_samples=300", "metrics.num_reference=200",
        "metrics.classifier.epochs=5", "metrics.classifier.width=16",
        f"callbacks.sample_quality.every_n_g_steps={args.every}", "callbacks.rich_progress_bar=null",
        "extras.print_config=false", "task_name=bench", f"hydra.run.dir={out}", *args.set,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = csv.DictReader((out / "csv" / "metrics.csv").open())
    return [
        (int(float(r["g_step"])), float(r["val/class_accuracy"])) for r in rows if r.get("val/class_accuracy")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SMALL), default=["csngan"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[12345, 1, 2, 3, 4, 5])
    parser.add_argument("--g-steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--tag", default="", help="suffix for the run folders, to keep variants apart")
    args = parser.parse_args()

    data = ROOT / "logs" / "bench" / "toy_shapes"
    if not data.is_dir():
        write_shapes(data)
    print("| model | seed | requested-class accuracy over G steps | final |\n|---|---|---|---|", flush=True)
    for model in args.models:
        finals = []
        for seed in args.seeds:
            points = run(model, seed, data, args)
            finals.append(points[-1][1])
            steps = ", ".join(f"{step}: {acc:.2f}" for step, acc in points)
            print(f"| {model} | {seed} | {steps} | {finals[-1]:.2f} |", flush=True)
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        at_least = sum(f >= 0.6 for f in finals)
        print(
            f"| {model} | all {len(finals)} | mean ± std | {statistics.mean(finals):.2f} ± {spread:.2f} "
            f"({at_least} of {len(finals)} ≥ 0.6) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
