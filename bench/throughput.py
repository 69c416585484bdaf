"""Training throughput: ganforge's trainer against a raw PyTorch loop over the same networks, losses,
optimisers and data loader (the floor: nothing but the two updates).

    .venv/bin/python bench/throughput.py [--steps 300] [--warmup 50] [--batches 64 256]

Rows, for DCGAN on digits at 32x32 on the CPU:
- raw loop: D update (G's fakes under no_grad), then G update with D frozen, per batch;
- ganforge, default callbacks and loggers (checkpoints, divergence guard, sample grids, sample
  quality, rich progress bar; CSV + offline W&B);
- ganforge, metrics off (`metrics=none`, still checkpoints, grids, guard and loggers);
- the raw loop again, last: how much the machine drifted during the run.

Generator steps/s after `--warmup` steps, two ways: a typical step (1 / the median interval between
two generator steps: data, both updates, hooks, logging) and overall (the wall clock to the last
step, including the periodic evaluations, sample grids and checkpoints). Start-up (Python and imports
once; `train()` to the first step per row) is reported separately. Every row of a table comes from
one run of this script; run it alone on the machine.
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
from train_config import train_config  # bench/, beside this script

from ganforge.config import instantiate
from ganforge.train import train


class StepClock(Callback):
    """The time at the end of every batch that made a generator step."""

    ticks: list[float] = []
    first: float | None = None

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args: object) -> None:
        if module.d_step % module.d_steps_per_g == 0:
            StepClock.ticks.append(time.perf_counter())
            StepClock.first = StepClock.first or time.time()


def steady(ticks: list[float], warmup: int) -> float:
    """Generator steps per second of a typical step after `warmup`: 1 / the median interval
    (periodic work such as an evaluation or a grid lands in a few intervals only)."""
    return 1 / statistics.median(b - a for a, b in itertools.pairwise(ticks[warmup - 1 :]))


def overall(ticks: list[float], warmup: int) -> float:
    """Generator steps per second from step `warmup` to the last, everything included."""
    return (len(ticks) - warmup) / (ticks[-1] - ticks[warmup - 1])


def raw_loop(cfg: DictConfig, steps: int) -> list[float]:
    """The two updates and nothing else, over ganforge's own data loader, networks and losses."""
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    module = instantiate(cfg.model)
    g, d, loss = module.generator, module.discriminator, module.loss
    opt_g, opt_d = module.optimizer_g(g.parameters()), module.optimizer_d(d.parameters())
    ticks = []
    batches = itertools.chain.from_iterable(itertools.repeat(data.train_dataloader()))
    for batch in itertools.islice(batches, steps):
        real, _ = data.on_after_batch_transfer(batch, 0)  # uint8 -> [-1, 1], as Lightning calls it
        z = torch.randn(real.shape[0], g.latent_dim)
        with torch.no_grad():
            fake = g(z)
        d_loss = loss.d_loss(d(real), d(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = loss.g_loss(d(g(torch.randn(real.shape[0], g.latent_dim))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        ticks.append(time.perf_counter())
    return ticks


def ganforge(cfg: DictConfig) -> tuple[list[float], float]:
    with open_dict(cfg):
        cfg.callbacks["clock"] = {"_target_": f"{__name__}.StepClock"}
    StepClock.ticks, StepClock.first = [], None
    start = time.time()
    train(cfg)
    assert StepClock.first is not None
    return StepClock.ticks, StepClock.first - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    opts = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import ganforge.train"], check=True)
    imports = time.perf_counter() - start
    print(f"a fresh Python importing ganforge.train (torch, lightning, hydra): {imports:.1f} s")
    print(f"DCGAN, digits 32x32, CPU ({torch.get_num_threads()} threads), {opts.steps} generator steps")
    print(
        "| batch | loop | G steps/s (median step) | images/s | vs raw | G steps/s overall | vs raw | "
        "train() to first step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in opts.batches:
        with tempfile.TemporaryDirectory() as tmp:
            common = [
                "data=digits", "model=dcgan", f"data.batch_size={batch}", "trainer.accelerator=cpu",
                f"max_g_steps={opts.steps}", f"paths.log_dir={tmp}/logs", f"paths.cache_dir={tmp}/cache",
                "extras.print_config=false",
            ]  # fmt: skip
            rows = {"raw PyTorch loop": (raw_loop(train_config(common, Path(tmp) / "raw"), opts.steps), None)}
            rows["ganforge, default callbacks + loggers"] = ganforge(
                train_config(common, Path(tmp) / "default")
            )
            rows["ganforge, metrics=none"] = ganforge(
                train_config([*common, "metrics=none"], Path(tmp) / "none")
            )
            again = raw_loop(train_config(common, Path(tmp) / "raw2"), opts.steps)  # drift over the run
            rows["raw PyTorch loop, again at the end"] = (again, None)
        floor = steady(rows["raw PyTorch loop"][0], opts.warmup)
        floor_all = overall(rows["raw PyTorch loop"][0], opts.warmup)
        for name, (ticks, startup) in rows.items():
            rate, everything = steady(ticks, opts.warmup), overall(ticks, opts.warmup)
            up = "-" if startup is None else f"{startup:.1f} s"
            print(
                f"| {batch} | {name} | {rate:.2f} | {rate * batch:.0f} | {rate / floor:.3f} | "
                f"{everything:.2f} | {everything / floor_all:.3f} | {up} |"
            )


if __name__ == "__main__":
    main()
