"""What ganforge's training step costs the host, against a raw PyTorch loop over the same networks.

    .venv/bin/python bench/host_overhead.py [--steps 300] [--warmup 20] [--extra OVERRIDE ...]

Networks so small that compute vanishes (DCGAN at 8x8, width 2, batch 4, one thread), so what is
left is what a GPU step would pay on the host. Per steady-state step, for the raw loop (D update,
G update, nothing else) and for ganforge (default callbacks and loggers; `metrics=none`):
- device read-backs: `aten._local_scalar_dense` (`.item()`, `float(t)`, `bool(t)`), `.tolist()`,
  `.cpu()`, `.numpy()`, with the file:line of each (ganforge.host_waits). Reads of the optimisers'
  CPU-resident step counters (`torch/optim`) are listed apart: no wait on a GPU. Tensors made from
  Python data (`torch.tensor(x)`: a host-to-device copy on a GPU) are counted too;
- aten ops (about one kernel launch each on a GPU);
- Python calls (`sys.setprofile` 'call' events);
- thread CPU time (median), in passes of their own without any instrumentation: `--rounds` passes
  per loop, the loops taking turns (the machine drifts); the fastest pass's median step (interference
  only ever adds time), and every pass's.
Each figure is per step, over the steps after `--warmup`. Run it alone on the machine (the times;
the counts are deterministic).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, open_dict
from train_config import train_config  # bench/, beside this script

from ganforge.host_waits import CPU_RESIDENT, HostWaitCounter, StepCount
from ganforge.plain_loop import plain_loop
from ganforge.train import train

TINY = [
    "data=digits", "data.image_size=8", "data.batch_size=4", "model=dcgan",
    "model.generator.latent_dim=4", "model.generator.base_channels=2", "model.discriminator.base_channels=2",
    "trainer.accelerator=cpu", "trainer.devices=1", "extras.print_config=false",
    "trainer.enable_model_summary=false",
]  # fmt: skip


class Probe:
    """One measurement per step: 'counts' (HostWaitCounter), 'calls' (Python calls) or 'time'."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.values: list[Any] = []
        self.counter: HostWaitCounter | None = None
        self.calls = 0
        self.last = 0.0

    def _on_call(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1

    def start(self) -> None:
        if self.kind == "counts":
            self.counter = HostWaitCounter().__enter__()
        elif self.kind == "calls":
            sys.setprofile(self._on_call)
        self.last = time.thread_time()

    def step(self) -> None:
        if self.kind == "counts":
            assert self.counter is not None
            self.values.append(self.counter.take())
        elif self.kind == "calls":
            self.values.append(self.calls)
            self.calls = 0
        else:
            now = time.thread_time()
            self.values.append(now - self.last)
            self.last = now

    def stop(self) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
        sys.setprofile(None)


class ProbeCallback(Callback):
    """A step runs from one batch's start to the next's (its hooks, the loggers, the next batch's
    loading), as ganforge.host_waits.HostWaitProbe counts it: first among the callbacks."""

    probe: Probe

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = False

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.started:
            ProbeCallback.probe.step()
        else:
            ProbeCallback.probe.start()
            self.started = True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        ProbeCallback.probe.step()
        ProbeCallback.probe.stop()


def raw_loop(cfg: DictConfig, probe: Probe) -> None:
    probe.start()
    for _ in plain_loop(cfg, cfg.max_g_steps, torch.device("cpu")):
        probe.step()
    probe.stop()


def ganforge(cfg: DictConfig, probe: Probe) -> None:
    with open_dict(cfg):
        cfg.callbacks["probe"] = {"_target_": f"{__name__}.ProbeCallback"}
    ProbeCallback.probe = probe
    train(cfg)


def summary(counts: list[StepCount], calls: list[int], times: list[float]) -> dict[str, Any]:
    device = [c.device_read_backs for c in counts]
    sites: Counter[str] = Counter()
    for c in counts:
        sites.update(c.read_backs)
        sites.update({f"{k} (tensor from Python data)": v for k, v in c.from_host.items()})
    return {
        "steps": len(counts),
        "batches with a device read-back": sum(1 for n in device if n),
        "device read-backs, median step": statistics.median(device),
        "device read-backs, all steps": sum(device),
        "CPU-side reads (optimiser counters, data loading), all steps": sum(
            n for c in counts for s, n in c.read_backs.items() if s.startswith(CPU_RESIDENT)
        ),
        "tensors from Python data, all steps": sum(c.device_from_host for c in counts),
        "aten ops, median step": statistics.median(c.ops for c in counts),
        "Python calls, median step": statistics.median(calls),
        "thread CPU ms, median step (fastest round)": 1000 * statistics.median(times),
        "sites": sites,
    }


def measure(
    run: Callable[[DictConfig, Probe], None], config: Callable[[str], DictConfig], kind: str, warmup: int
) -> list:
    probe = Probe(kind)
    run(config(kind), probe)
    return probe.values[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per loop, interleaved")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every ganforge row")
    opts = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory() as tmp:
        common = [*TINY, f"max_g_steps={opts.steps}", f"paths.log_dir={tmp}/logs",
                  f"paths.cache_dir={tmp}/cache", *opts.extra]  # fmt: skip
        runs = itertools.count()

        def config(*extra: str) -> Callable[[str], DictConfig]:
            return lambda kind: train_config([*common, *extra], Path(tmp) / f"{kind}{next(runs)}")

        loops = {
            "raw PyTorch loop": (raw_loop, config()),
            "ganforge, default callbacks + loggers": (ganforge, config()),
            "ganforge, `metrics=none`": (ganforge, config("metrics=none")),
        }
        counted = {
            name: [measure(*loop, kind, opts.warmup) for kind in ("counts", "calls")]
            for name, loop in loops.items()
        }
        # the times: each loop once per round, the rounds one after the other (the machine drifts)
        times: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(opts.rounds):
            for name, loop in loops.items():
                times[name].append(statistics.median(measure(*loop, "time", opts.warmup)))
    # the least disturbed round: interference only ever adds time
    rows = {name: summary(*counted[name], [min(times[name])]) for name in loops}
    for name in loops:
        rows[name]["thread CPU ms, median step, each round"] = " / ".join(
            f"{1000 * t:.2f}" for t in times[name]
        )
    raw = rows["raw PyTorch loop"]
    figures = [k for k in raw if k not in ("sites", "steps")]
    print(f"DCGAN 8x8, width 2, batch 4, one thread; {opts.steps} steps, figures after {opts.warmup}")
    print("| figure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for figure in figures:
        cells = []
        for row in rows.values():
            value = row[figure]
            numeric = isinstance(value, int | float) and "median" in figure and raw[figure]
            ratio = f" ({value / raw[figure]:.2f}x)" if numeric else ""
            cells.append(f"{value:.3g}{ratio}" if isinstance(value, float) else f"{value}{ratio}")
        print(f"| {figure} | " + " | ".join(cells) + " |")
    for name, row in rows.items():
        print(f"\n{name}: read-backs by line, over {row['steps']} steps")
        for site, n in row["sites"].most_common():
            print(f"  {n:6d}  {site.replace(str(Path.cwd()) + os.sep, '')}")


if __name__ == "__main__":
    main()
