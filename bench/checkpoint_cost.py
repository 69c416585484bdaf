"""What the short `last.ckpt` interval costs: one checkpoint write against the training time between
two of them, for the default DCGAN on digits (32x32) and DCGAN at 64x64 (CelebA's size).

    .venv/bin/python bench/checkpoint_cost.py [--steps 60] [--interval 50]

Each configuration trains `--steps` generator steps with `last.ckpt` every `--interval` of them;
every batch (one D and one G step) and every checkpoint write through ganforge's writer (finite
check, fsync, rename) is timed. Printed: the checkpoint size, the median write, the median batch,
and the overhead `write / (interval x batch)`. Run it alone: timings on a shared machine mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback
from omegaconf import open_dict
from train_config import train_config  # bench/, beside this script

from ganforge import checkpoint_io
from ganforge.train import train

CONFIGS = {
    "dcgan digits 32x32, batch 64": ["data=digits"],
    "dcgan 64x64 (celeba size), batch 64": ["data=digits", "data.image_size=64"],
}


class StepTimer(Callback):
    times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        StepTimer.times.append(time.perf_counter() - self.start)


def timed_writes() -> list[float]:
    """Patch the writer to record how long each checkpoint write takes."""
    writes: list[float] = []
    save = checkpoint_io.atomic_save

    def timed(obj, path):
        start = time.perf_counter()
        save(obj, path)
        writes.append(time.perf_counter() - start)

    checkpoint_io.atomic_save = timed
    return writes


def run(overrides: list[str], out: Path) -> None:
    cfg = train_config(overrides, out)
    with open_dict(cfg):
        cfg.callbacks["timer"] = {"_target_": f"{__name__}.StepTimer"}
    train(cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--interval", type=int, default=50)
    args = parser.parse_args()
    writes = timed_writes()
    common = [
        "metrics=none", "logger=csv", "extras.print_config=false", "trainer.accelerator=cpu",
        f"max_g_steps={args.steps}", "callbacks.sample_grid.every_n_g_steps=100000",
    ]  # fmt: skip
    print(f"| configuration | checkpoint | write (median) | G step (median) | overhead at {args.interval} |")
    print("|---|---|---|---|---|")
    for name, overrides in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            writes.clear()
            StepTimer.times = []
            interval = f"callbacks.model_checkpoint.last_every_n_g_steps={args.interval}"
            run([*common, *overrides, f"paths.log_dir={tmp}", interval], Path(tmp) / "run")
            size = (Path(tmp) / "run" / "checkpoints" / "last.ckpt").stat().st_size
            step = statistics.median(StepTimer.times[5:])  # steady state: the first batches warm up
            write = statistics.median(writes)
        overhead = write / (args.interval * step)
        print(
            f"| {name} | {size / 1e6:.1f} MB | {write * 1e3:.0f} ms | {step * 1e3:.0f} ms | "
            f"{100 * overhead:.2f}% |"
        )


if __name__ == "__main__":
    main()
