"""No framework tax on a GPU, counted on the CPU: batches between logging steps read nothing back
from the device and launch about as many ops as a plain loop; statistics are the interval's means;
`last.ckpt` follows the clock. Counts are deterministic; times live in bench/host_overhead.py."""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganforge.callbacks.checkpoint import GANCheckpoint
from ganforge.callbacks.wall_clock import WallClock
from ganforge.ema import GeneratorEMA
from ganforge.host_waits import HostWaitCounter, HostWaitProbe
from ganforge.plain_loop import plain_loop
from ganforge.train import train
from tests.conftest import add_callback

OP_BUDGET = 1.1  # aten ops per batch, against the plain loop's


class Probe(HostWaitProbe):
    """debug=host_waits's probe, kept where the test can read it."""

    last: Probe | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        Probe.last = self


@pytest.mark.parametrize(
    "settings",
    [
        ["model=dcgan"],
        # EMA (AveragedModel reads its counter at every update), lazy R1, D-only batches
        [
            "model=dcgan",
            "model.ema_decay=0.9",
            "model.r1_gamma=1",
            "model.r1_interval=2",
            "model.d_steps_per_g=2",
        ],
    ],
    ids=["dcgan", "ema+r1+2d"],
)
def test_batches_between_logging_steps_wait_for_nothing(make_cfg, settings: list[str]) -> None:
    cfg = make_cfg(
        *settings, "max_g_steps=25", "trainer.log_every_n_steps=10",
        "callbacks.sample_grid.every_n_g_steps=10", "callbacks.sample_quality.every_n_g_steps=10",
        "metrics.num_samples=100", "metrics.num_reference=100",
    )  # fmt: skip
    add_callback(cfg, Probe)
    train(cfg)
    probe = Probe.last
    batches = len(probe.steps)
    assert batches == 25 * int(settings[-1][-1] if "d_steps" in settings[-1] else 1)
    between = [c for d, c in enumerate(probe.steps, start=1) if d % 10 and d != batches]  # the d-th batch
    waits = {site: n for c in between for site, n in c.read_backs.items() if c.device_read_backs}
    assert not waits, f"read-backs between logging steps: {waits}"
    assert not [c.from_host for c in between if c.device_from_host]
    assert sum(c.device_read_backs for c in probe.steps) > 0  # the logging steps do read back

    if settings != ["model=dcgan"]:
        return  # the plain loop has no EMA or R1 to compare ops with
    # about as many ops as a plain loop over the same networks
    counter = HostWaitCounter()
    plain = []
    with counter:
        for _ in plain_loop(cfg, 12, torch.device("cpu")):
            plain.append(counter.take().ops)
    budget = OP_BUDGET * statistics.median(plain[2:])
    ops = max(c.ops for c in between[1:])  # the first batch also makes the optimisers' state
    assert ops <= budget, f"{ops} aten ops in a batch, plain loop {statistics.median(plain[2:])}"


# Python calls per batch, against the plain loop's: 2.6 with ganforge.profiler.NoProfiler, 3.1 with
# Lightning's PassThroughProfiler, 11 before issue 30 (deterministic for given library versions)
CALL_BUDGET = 3


class CallCounter(Callback):
    """Python calls (`sys.setprofile` 'call' events) of each batch from the 3rd to the 9th."""

    per_batch: list[int] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if pl_module.d_step == 2:
            CallCounter.per_batch, self.calls = [], 0
            sys.setprofile(self.count)
        elif 2 < pl_module.d_step <= 9:
            CallCounter.per_batch.append(self.calls)
            self.calls = 0
        if pl_module.d_step == 9:
            sys.setprofile(None)

    def count(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1


def test_a_batch_makes_few_python_calls_beside_a_plain_loop(make_cfg) -> None:
    """Each hook of each callback costs Lightning a few calls, and a batch visits ~8 hooks: a
    callback that does Lightning's own bookkeeping per batch (`should_update_logs`: ~200 calls)
    or a profiler context per hook shows here."""
    cfg = make_cfg("model=dcgan", "max_g_steps=12", "trainer.log_every_n_steps=50")
    add_callback(cfg, CallCounter)
    train(cfg)
    calls = []

    def count(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls[-1] += 1

    steps = plain_loop(cfg, 9, torch.device("cpu"))
    for _ in range(3):
        next(steps)
    for _ in range(6):
        calls.append(0)
        sys.setprofile(count)
        next(steps)
        sys.setprofile(None)
    ratio = statistics.median(CallCounter.per_batch) / statistics.median(calls)
    assert ratio <= CALL_BUDGET, (CallCounter.per_batch, calls)


def test_host_waits_probe_reports_the_lines_that_wait(make_cfg) -> None:
    cfg = make_cfg("debug=host_waits", "max_g_steps=12", "trainer.log_every_n_steps=4", "metrics=none")
    add_callback(cfg, Probe)
    train(cfg)
    report = Probe.last.report()
    assert report.startswith("host waits: 3 of 12 training batches read a device value back")
    assert "training_stats.py" in report  # the statistics' read-back, once per interval
    assert "(CPU-resident: optimiser counters, data loading; no wait)" in report


class PerUpdate(Callback):
    """Every statistic the module records, read back here (a test may wait)."""

    values: list[dict[str, float]] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        PerUpdate.values = []
        record = pl_module.stats.record

        def noted(g_step: int, values: dict[str, torch.Tensor]) -> None:
            PerUpdate.values.append({k: float(v.detach()) for k, v in values.items()})
            record(g_step, values)

        pl_module.stats.record = noted


def test_logged_statistics_are_the_means_over_each_interval(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("max_g_steps=12", "trainer.log_every_n_steps=4", "metrics=none", "logger=csv")
    add_callback(cfg, PerUpdate)
    _, outputs = train(cfg)
    with open(outputs["metrics"]) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/d_loss")]
    assert [int(float(r["g_step"])) for r in rows] == [4, 8, 12]
    d_updates = [v for v in PerUpdate.values if "d_loss" in v]
    g_updates = [v for v in PerUpdate.values if "g_loss" in v]
    for i, row in enumerate(rows):
        for name, updates in (("d_loss", d_updates), ("d_real", d_updates), ("g_loss", g_updates)):
            expected = statistics.fmean(u[name] for u in updates[4 * i : 4 * i + 4])
            assert float(row[f"train/{name}"]) == pytest.approx(expected, rel=1e-6), (i, name)


class FakeClock(Callback):
    """Twenty seconds of wall time per batch for every callback's WallClock; which g_steps wrote
    last.ckpt."""

    saved: list[int] = []

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        FakeClock.saved = []
        for callback in trainer.callbacks:
            for clock in [v for v in vars(callback).values() if isinstance(v, WallClock)]:
                clock.clock = lambda: 20.0 * pl_module.d_step
                clock.restart()
        checkpoint = next(c for c in trainer.callbacks if isinstance(c, GANCheckpoint))
        save = checkpoint.save

        def noted(trainer: Trainer, numbered: bool) -> None:
            FakeClock.saved.append(trainer.lightning_module.g_step)
            save(trainer, numbered)

        checkpoint.save = noted


def test_periodic_work_follows_the_clock(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "max_g_steps=13", "trainer.log_every_n_steps=2", "metrics.num_samples=100",
        "callbacks.model_checkpoint.last_every_minutes=1", "callbacks.model_checkpoint.every_n_g_steps=1000",
        "callbacks.sample_quality.every_n_g_steps=null", "callbacks.sample_quality.every_n_minutes=1",
        "callbacks.sample_grid.every_n_g_steps=null", "callbacks.sample_grid.every_n_minutes=2",
    )  # fmt: skip
    add_callback(cfg, FakeClock)
    _, outputs = train(cfg)
    # a minute is three batches; the clock is read every second batch; and the last step
    assert FakeClock.saved == [4, 8, 12, 13]
    with open(outputs["metrics"]) as f:
        evaluated = [int(float(r["g_step"])) for r in csv.DictReader(f) if r.get("val/fid")]
    assert evaluated == [4, 8, 12, 13]
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").glob("g_step_*.png"))
    assert grids == [f"g_step_{g:07d}.png" for g in (0, 6, 12, 13)]  # two minutes: six batches


def test_generator_ema_matches_averaged_model_bitwise_without_reading_back() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    reference = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    ema = GeneratorEMA(net, 0.9)
    for _ in range(4):
        net(torch.randn(2, 1, 5, 5)).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad
        reference.update_parameters(net)
        with HostWaitCounter() as counter:
            ema.update_parameters(net)
        assert not counter.count.read_backs
    for key, value in reference.state_dict().items():
        assert torch.equal(ema.state_dict()[key], value), key
    resumed = GeneratorEMA(net, 0.9)
    resumed.load_state_dict(ema.state_dict())
    reference.update_parameters(net)
    resumed.update_parameters(net)  # continues with a lerp, not the first update's copy
    assert all(torch.equal(resumed.state_dict()[k], v) for k, v in reference.state_dict().items())
