"""Training throughput: ganforge's trainer against a raw PyTorch loop over the same networks, losses,
optimisers and data loader (the floor: nothing but the two updates), and the speed switches.

    .venv/bin/python bench/throughput.py [--device cpu|cuda] [--sizes 32 64] [--batches 64 256]
        [--steps 300] [--warmup 50] [--variants bf16 channels_last compile graphs ...] [--celeba DIR]
        [--extra OVERRIDE ...]   # appended to every ganforge row, e.g. logger=csv where W&B is absent

Rows, for DCGAN at each image size (32: digits; 64: digits resized to 64x64x3, the shape of
CelebA-64, or the CelebA folder given with --celeba), per batch size:
- raw loop: D update (G's fakes under no_grad), then G update with D frozen, fp32, per batch;
- ganforge, default callbacks and loggers (checkpoints, divergence guard, sample grids, sample
  quality, rich progress bar; CSV + offline W&B);
- ganforge, metrics off (`metrics=none`, still checkpoints, grids, guard and loggers);
- ganforge, metrics off, with each `--variants` entry: bf16-mixed, channels_last, compile, CUDA graphs,
  alone and combined (the default on a GPU: all of them; on a CPU: none);
- the raw loop again, last: how much the machine drifted during the run.

TFLOP/s: the raw loop's FLOPs per generator step (torch's FlopCounterMode: both updates, forward and
backward) times the row's median rate, beside the ~790 TFLOP/s an H200 sustains in bf16 on large matrix
products. Generator steps/s after `--warmup` steps, two ways: a typical step (1 / the median interval
between two generator steps) and overall (the wall clock to the last step, including the periodic
evaluations, grids and checkpoints). On a GPU both loops synchronise every `SYNC_EVERY` generator steps
and at the last, so the clock sees finished work, not queued kernels. Start-up (Python and imports once;
`train()` to the first step per row) is reported separately. Every row of a table comes from one run of
this script; run it alone on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode
from train_config import train_config  # bench/, beside this script

from ganforge.errors import GanforgeError
from ganforge.plain_loop import plain_loop
from ganforge.train import train

SYNC_EVERY = 25
VARIANTS = {
    "bf16": ["trainer.precision=bf16-mixed"],
    "channels_last": ["model.channels_last=true"],
    "compile": ["model.compile=true"],
    "bf16+channels_last": ["trainer.precision=bf16-mixed", "model.channels_last=true"],
    "bf16+channels_last+compile": [
        "trainer.precision=bf16-mixed", "model.channels_last=true", "model.compile=true",
    ],
    "graphs": ["model.cuda_graphs=true"],
    "bf16+channels_last+graphs": [  # trainer=gpu_fast
        "trainer.precision=bf16-mixed", "model.channels_last=true", "model.cuda_graphs=true",
    ],
}  # fmt: skip


def tick(device: torch.device, step: int, last: int) -> float:
    if device.type == "cuda" and (step % SYNC_EVERY == 0 or step == last):
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StepClock(Callback):
    """The time at the end of every batch that made a generator step."""

    ticks: list[float] = []
    first: float | None = None

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args: object) -> None:
        if module.d_step % module.d_steps_per_g == 0:
            StepClock.ticks.append(tick(module.device, module.g_step, trainer.max_steps // 2))
            StepClock.first = StepClock.first or time.time()


def steady(ticks: list[float], warmup: int) -> float:
    """Generator steps per second of a typical step after `warmup`: 1 / the median interval
    (periodic work such as an evaluation or a grid lands in a few intervals only)."""
    return 1 / statistics.median(b - a for a, b in itertools.pairwise(ticks[warmup - 1 :]))


def overall(ticks: list[float], warmup: int) -> float:
    """Generator steps per second from step `warmup` to the last, everything included."""
    return (len(ticks) - warmup) / (ticks[-1] - ticks[warmup - 1])


def flops_per_step(cfg: DictConfig, device: torch.device) -> float:
    """FLOPs of one generator step of the raw loop: its D and G updates, forward and backward."""
    steps = plain_loop(cfg, 2, device)
    next(steps)  # lazy initialisation outside the count
    with FlopCounterMode(display=False) as counter:
        next(steps)
    return counter.get_total_flops()


def raw_loop(cfg: DictConfig, steps: int, device: torch.device) -> list[float]:
    return [tick(device, step, steps) for step in plain_loop(cfg, steps, device)]


def ganforge(cfg: DictConfig) -> tuple[list[float], float]:
    with open_dict(cfg):
        cfg.callbacks["clock"] = {"_target_": f"{__name__}.StepClock"}
    StepClock.ticks, StepClock.first = [], None
    start = time.time()
    train(cfg)
    assert StepClock.first is not None
    return StepClock.ticks, StepClock.first - start


def data_overrides(size: int, celeba: Path | None) -> tuple[str, list[str]]:
    if size == 32:
        return "digits 32x32x1", ["data=digits"]
    if celeba is not None:
        return f"CelebA {size}x{size}x3 ({celeba})", ["data=celeba", f"data.data_dir={celeba}"]
    return f"digits resized to {size}x{size}x3", ["data=digits", "data.channels=3"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=None)
    parser.add_argument("--celeba", type=Path, default=None, help="an img_align_celeba folder for 64x64")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every ganforge row")
    opts = parser.parse_args()
    device = torch.device(opts.device)
    variants = opts.variants if opts.variants is not None else list(VARIANTS) * (device.type == "cuda")
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ganforge.train"], check=True)
    imports = time.perf_counter() - start
    print(f"a fresh Python importing ganforge.train (torch, lightning, hydra): {imports:.1f} s")
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"DCGAN on {name}, {opts.steps} generator steps, rates after {opts.warmup}")
    print(
        "| data | batch | loop | G steps/s (median step) | images/s | TFLOP/s | vs raw | G steps/s overall | "
        "images/s overall | vs raw | `train()` to first step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    for size, batch in itertools.product(opts.sizes, opts.batches):
        data, data_args = data_overrides(size, opts.celeba)
        with tempfile.TemporaryDirectory() as tmp:
            common = [
                *data_args, f"data.image_size={size}", "model=dcgan", f"data.batch_size={batch}",
                f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.precision=32-true",
                f"max_g_steps={opts.steps}", f"paths.log_dir={tmp}/logs", f"paths.cache_dir={tmp}/cache",
                "extras.print_config=false", *opts.extra,
            ]  # fmt: skip

            def config(run: str, *extra: str, common: list[str] = common, tmp: str = tmp) -> DictConfig:
                return train_config([*common, *extra], Path(tmp) / run)

            flops = flops_per_step(config("flops"), device)
            rows = {"raw PyTorch loop (fp32)": (raw_loop(config("raw"), opts.steps, device), None)}
            rows["ganforge, default callbacks + loggers"] = ganforge(config("default"))
            rows["ganforge, `metrics=none`"] = ganforge(config("none", "metrics=none"))
            refused = {}
            for variant in variants:
                try:
                    rows[f"ganforge, `metrics=none`, {variant}"] = ganforge(
                        config(variant, "metrics=none", *VARIANTS[variant])
                    )
                except GanforgeError as err:  # e.g. compile + channels_last on CUDA (PyTorch issue 171622)
                    refused[f"ganforge, `metrics=none`, {variant}"] = str(err)
            again = raw_loop(config("raw2"), opts.steps, device)  # drift over the run
            rows["raw PyTorch loop (fp32), again at the end"] = (again, None)
        floor = steady(rows["raw PyTorch loop (fp32)"][0], opts.warmup)
        floor_all = overall(rows["raw PyTorch loop (fp32)"][0], opts.warmup)
        for loop, (ticks, startup) in rows.items():
            rate, everything = steady(ticks, opts.warmup), overall(ticks, opts.warmup)
            up = "-" if startup is None else f"{startup:.1f} s"
            print(
                f"| {data} | {batch} | {loop} | {rate:.2f} | {rate * batch:.0f} | {rate * flops / 1e12:.1f} "
                f"| {rate / floor:.3f} | {everything:.2f} | {everything * batch:.0f} | "
                f"{everything / floor_all:.3f} | {up} |",
                flush=True,
            )
        for loop, reason in refused.items():
            print(f"| {data} | {batch} | {loop} | refused: {reason} ||||||||", flush=True)


if __name__ == "__main__":
    main()
