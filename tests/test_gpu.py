"""On a CUDA GPU (skipped without one; `bench/gpu_check.sh` runs these with the GPU benchmarks): the
speed switches train for real on the device, and DDP over two GPUs where there are two."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ganforge.checkpoint import load_checkpoint, load_model
from ganforge.errors import GanforgeError
from ganforge.train import train
from tests.conftest import FAST, ROOT, SMALL_NETWORKS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs these)"
    ),
]
ON_GPU = ["trainer=gpu", "trainer.accelerator=gpu", "metrics=none", "max_g_steps=20"]


def test_compile_with_channels_last_and_transposed_convolutions_is_one_line_on_cuda(make_cfg) -> None:
    cfg = make_cfg(*ON_GPU, "model=dcgan", "model.channels_last=true", "model.compile=true")
    with pytest.raises(GanforgeError, match="PyTorch issue 171622"):
        train(cfg)


@pytest.mark.parametrize("switches", [["model=sngan", "model.compile=true"], ["model=dcgan"]])
def test_trainer_gpu_trains_in_bf16_with_channels_last_and_compile(make_cfg, switches: list[str]) -> None:
    """sngan (up-sampling, no transposed convolution) with compile; dcgan without it."""
    cfg = make_cfg(*ON_GPU, *switches, "model.channels_last=true", "model.ema_decay=0.9")
    assert cfg.trainer.precision == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true")
    metrics, _ = train(cfg)
    assert metrics["g_step"] == 20
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    model = load_model(load_checkpoint(ckpt), torch.device("cpu"), ckpt)  # GPU weights, plain CPU model
    assert model.generate(torch.randn(4, model.latent_dim)).isfinite().all()


@pytest.mark.parametrize("model", ["wgan_gp", "dcgan"])
def test_16_mixed_on_the_gpu_keeps_a_scaler_per_network(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}", *ON_GPU, "trainer.precision=16-mixed")
    metrics, _ = train(cfg)
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))
    ckpt = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=True)
    assert set(ckpt["grad_scalers"]) == {"generator", "discriminator"}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_ddp_over_two_gpus(tmp_path: Path) -> None:
    args = [
        *FAST, *SMALL_NETWORKS["dcgan"], "trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=2",
        "metrics=none", f"paths.log_dir={tmp_path / 'logs'}",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["gan_steps"]["g_step"] == 4


class GraphsWatch(Callback):
    """The kinds of update that ran as CUDA graphs."""

    captured: list[object] = []

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        GraphsWatch.captured = sorted(str(key) for key in module._graphed._graphs)


def test_cuda_graphs_train_as_eager_within_a_tolerance(make_cfg) -> None:
    """fp32 and deterministic kernels, so that the two runs differ by the graphs alone: EMA, lazy R1
    (two kinds of D update), a scheduler; the graphed run's checkpoint loads into a plain model."""
    common = [
        *ON_GPU, "model=dcgan", *SMALL_NETWORKS["dcgan"], "trainer.precision=32-true",
        "trainer.deterministic=true", "max_g_steps=8", "model.ema_decay=0.9", "model.r1_gamma=1",
        "model.r1_interval=2",
        "+model.scheduler_g={_target_:torch.optim.lr_scheduler.LinearLR,_partial_:true,total_iters:8}",
    ]  # fmt: skip
    eager_metrics, _ = train(eager := make_cfg(*common, run="eager"))
    watch = f"+callbacks.watch._target_={__name__}.GraphsWatch"
    graphed_metrics, _ = train(graphed := make_cfg(*common, "model.cuda_graphs=true", watch, run="graphed"))
    assert len(GraphsWatch.captured) == 3  # D with R1, D without, G
    weights = [
        torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=True)["state_dict"]
        for cfg in (eager, graphed)
    ]
    for name, value in weights[0].items():
        if value.is_floating_point():
            torch.testing.assert_close(weights[1][name], value, rtol=1e-3, atol=1e-4, msg=name)
    assert graphed_metrics["train/d_loss"] == pytest.approx(eager_metrics["train/d_loss"], rel=1e-3)
    ckpt = Path(graphed.paths.output_dir, "checkpoints", "last.ckpt")
    model = load_model(load_checkpoint(ckpt), torch.device("cpu"), ckpt)
    assert model.generate(torch.randn(4, model.latent_dim)).isfinite().all()


def test_trainer_gpu_fast_trains(make_cfg) -> None:
    """The preset: bf16 (where the GPU has it), channels_last and CUDA graphs together."""
    cfg = make_cfg("trainer=gpu_fast", *ON_GPU[1:], "model=dcgan", "model.ema_decay=0.9")
    assert cfg.model.cuda_graphs and cfg.model.channels_last and cfg.trainer.precision == "bf16-mixed"
    metrics, _ = train(cfg)
    assert metrics["g_step"] == 20
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))
