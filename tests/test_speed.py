"""Speed switches keep training correct: mixed precision on every image model, with the double-backward
penalties under autocast close to fp32; a NaN caught without a read-back per step still never reaches
a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from omegaconf import open_dict
from torch import nn

from ganforge.callbacks.progress_bar import GANProgressBar
from ganforge.config import gpu_precision
from ganforge.errors import TrainingDiverged
from ganforge.losses import NonSaturatingLoss
from ganforge.regularizers import gradient_penalty, r1_penalty
from ganforge.train import train
from tests.conftest import compose_train

IMAGE_MODELS = ["mlp", "dcgan", "lsgan", "wgan_gp", "sngan", "cdcgan", "csngan"]


@pytest.mark.slow
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_bf16_mixed_trains_every_image_model(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}", "trainer.precision=bf16-mixed", "metrics=none", "max_g_steps=3")
    metrics, _ = train(cfg)
    assert metrics["g_step"] == 3
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))


def critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 8 * 8, 1)
    )


@pytest.mark.parametrize("penalty", ["gradient_penalty", "r1"])
def test_penalties_under_bf16_autocast_are_close_to_fp32(penalty: str) -> None:
    net = critic()
    real, fake = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)

    def value() -> torch.Tensor:
        torch.manual_seed(1)  # the same interpolation weights both times
        if penalty == "r1":
            return r1_penalty(net, real)
        return gradient_penalty(net, real, fake)

    full = value()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = value()
    assert torch.allclose(mixed.float(), full, rtol=5e-2, atol=1e-3), (mixed.item(), full.item())


@pytest.mark.parametrize(
    ("cuda", "bf16", "precision"),
    [(True, True, "bf16-mixed"), (True, False, "32-true"), (False, False, "32-true")],
)
def test_trainer_gpu_picks_bf16_mixed_where_the_gpu_has_it(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, bf16: bool, precision: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert gpu_precision() == precision
    assert compose_train(["trainer=gpu"]).trainer.precision == precision
    assert compose_train(["trainer=ddp"]).trainer.precision == precision


class NaNFromTheFourthUpdate(NonSaturatingLoss):
    """A discriminator loss that turns NaN at its fourth call (g_step 3)."""

    calls = 0

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        loss = super().d_loss(real, fake)
        return loss * float("nan") if type(self).calls > 3 else loss


@pytest.mark.slow
def test_a_nan_loss_found_without_a_per_step_read_back_still_keeps_it_out_of_every_checkpoint(
    make_cfg,
) -> None:
    NaNFromTheFourthUpdate.calls = 0
    cfg = make_cfg(
        f"model.loss._target_={__name__}.NaNFromTheFourthUpdate", "metrics=none", "max_g_steps=10",
        "trainer.log_every_n_steps=50",  # the logging interval would come too late: the checkpoint finds it
        "callbacks.model_checkpoint.last_every_n_g_steps=1",
        "callbacks.divergence_guard.every_n_g_steps=1000",
    )  # fmt: skip
    with pytest.raises(
        TrainingDiverged, match=r"at g_step 3: the discriminator loss is nan; last good checkpoint: "
    ):
        train(cfg)
    last = torch.load(
        Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), map_location="cpu", weights_only=True
    )
    assert last["gan_steps"]["g_step"] == 3
    assert all(t.isfinite().all() for t in last["state_dict"].values() if t.is_floating_point())


class CountingProgressBar(GANProgressBar):
    reads = 0

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        CountingProgressBar.reads += 1
        return super().get_metrics(trainer, pl_module)


@pytest.mark.slow
def test_the_progress_bar_reads_metrics_back_only_at_logging_steps(make_cfg) -> None:
    CountingProgressBar.reads = 0
    cfg = make_cfg("metrics=none", "max_g_steps=20", "trainer.log_every_n_steps=5")
    with open_dict(cfg):
        cfg.callbacks.rich_progress_bar._target_ = f"{__name__}.CountingProgressBar"
    train(cfg)
    assert 4 <= CountingProgressBar.reads <= 6  # 20 batches: at 5, 10, 15, 20 (and the end), not 20 times


@pytest.mark.parametrize("cuda", [True, False])
def test_batches_are_pinned_where_there_is_a_gpu(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    for data in ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"):
        assert compose_train([f"data={data}"]).data.pin_memory is cuda
