"""Speed switches keep training correct: mixed precision on every image model (bf16, and fp16 with one
gradient scaler per network, saved and restored), the double-backward penalties under autocast close
to fp32, compile and channels_last training like eager and saving plain weights; a NaN caught
without a read-back per step still never reaches a checkpoint."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import open_dict
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ganforge import gan_module
from ganforge.callbacks.progress_bar import GANProgressBar
from ganforge.checkpoint import load_checkpoint, load_model
from ganforge.config import gpu_precision, instantiate
from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.gan_module import GANLitModule
from ganforge.losses import NonSaturatingLoss
from ganforge.regularizers import gradient_penalty, r1_penalty
from ganforge.train import train
from tests.conftest import FAST, SMALL_NETWORKS, add_callback, compose_train, trained

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


# 16-mixed: Lightning turns `precision=16-mixed` into bf16 on a CPU, so these tests give the trainer
# the fp16 plugin itself (what `trainer.precision=16-mixed` builds on a GPU). The initial scale
# overflows fp16 on purpose: both scalers must back off, each on its own.
FP16_PLUGIN = (
    "+trainer.plugins=[{_target_: lightning.pytorch.plugins.precision.MixedPrecision, precision: 16-mixed,"
    " device: cpu, scaler: {_target_: torch.amp.GradScaler, device: cpu, init_scale: 16777216}}]"
)
FP16 = ["trainer.precision=null", FP16_PLUGIN, "metrics=none"]


class ScalerWatch(Callback):
    """The scales each network's scaler has when training starts and ends."""

    seen: dict[str, dict[str, float]] = {}

    def on_train_start(self, trainer: Trainer, module: GANLitModule) -> None:
        ScalerWatch.seen["start"] = {n: s.get_scale() for n, s in module._grad_scalers.items()}

    def on_train_end(self, trainer: Trainer, module: GANLitModule) -> None:
        assert trainer.precision_plugin.scaler is None  # a network's scaler is lent only for its update
        ScalerWatch.seen["end"] = {n: s.get_scale() for n, s in module._grad_scalers.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["model=wgan_gp"],  # gradient penalty
        ["model=dcgan", "model.r1_gamma=10"],
        ["model=cdcgan", "model.mode_seeking=1"],
    ],
    ids=["gradient_penalty", "r1", "mode_seeking"],
)
def test_16_mixed_trains_with_one_scaler_per_network(make_cfg, overrides: list[str]) -> None:
    cfg = add_callback(make_cfg(*overrides, *FP16, "max_g_steps=6"), ScalerWatch)
    metrics, _ = train(cfg)
    assert metrics["g_step"] == 6
    assert all(math.isfinite(metrics[k]) for k in ("train/d_loss", "train/g_loss"))
    end = ScalerWatch.seen["end"]
    assert set(end) == {"generator", "discriminator"}
    assert all(scale < 2.0**24 for scale in end.values()), end  # each backed off from the overflow


@pytest.mark.slow
def test_16_mixed_scalers_are_saved_and_restored_on_resume(make_cfg) -> None:
    first = add_callback(make_cfg(*FP16, "max_g_steps=5"), ScalerWatch)
    train(first)
    ckpt = Path(first.paths.output_dir, "checkpoints", "last.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["grad_scalers"]
    assert {n: s["scale"] for n, s in saved.items()} == ScalerWatch.seen["end"]
    # five updates each, so at most five halvings each (one shared scaler would see ten updates)
    assert all(2.0**19 <= scale < 2.0**24 for scale in ScalerWatch.seen["end"].values())

    resumed = add_callback(make_cfg(*FP16, "max_g_steps=8", f"ckpt_path={ckpt}", run="resumed"), ScalerWatch)
    train(resumed)
    assert ScalerWatch.seen["start"] == {n: s["scale"] for n, s in saved.items()}


@pytest.mark.parametrize("penalty", ["gradient_penalty", "r1"])
def test_penalties_under_fp16_autocast_are_close_to_fp32(penalty: str) -> None:
    net = critic()
    real, fake = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)
    torch.manual_seed(1)
    full = r1_penalty(net, real) if penalty == "r1" else gradient_penalty(net, real, fake)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = r1_penalty(net, real) if penalty == "r1" else gradient_penalty(net, real, fake)
    assert torch.allclose(mixed.float(), full, rtol=2e-2, atol=1e-3), (mixed.item(), full.item())


# compile and channels_last: the same training as eager fp32 NCHW, to a tolerance, and checkpoints
# that load into a plain model. Spectral norm and EMA on, as the issue asks.
SPEED_MODEL = [
    "model.discriminator.spectral_norm=true",
    "model.ema_decay=0.9",
    "metrics=none",
    "max_g_steps=3",
]


class SpeedWatch(Callback):
    """What the networks ran as during training: compiled or not, NHWC weights or not."""

    seen: dict[str, object] = {}

    def on_train_end(self, trainer: Trainer, module: GANLitModule) -> None:
        weights = [p for p in module.parameters() if p.dim() == 4]
        SpeedWatch.seen = {
            "compiled": sorted(module._compiled),
            "nhwc": all(p.is_contiguous(memory_format=torch.channels_last) for p in weights),
        }


WATCH = f"+callbacks.speed_watch._target_={__name__}.SpeedWatch"


@pytest.fixture(scope="module")
def eager_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    tmp = tmp_path_factory.mktemp("eager")
    return torch.load(trained(tmp, tmp / "cache", "model=dcgan", *SPEED_MODEL), weights_only=True)[
        "state_dict"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "switches",
    [
        ["model.channels_last=true"],
        ["model.compile=true"],
        ["model.channels_last=true", "model.compile=true"],
    ],
    ids=["channels_last", "compile", "both"],
)
def test_compile_and_channels_last_train_like_eager_and_save_plain_weights(
    tmp_path: Path, eager_weights: dict[str, torch.Tensor], switches: list[str]
) -> None:
    ckpt = trained(tmp_path, tmp_path / "cache", "model=dcgan", *SPEED_MODEL, *switches, WATCH)
    compiled = "model.compile=true" in switches
    assert SpeedWatch.seen["compiled"] == (["discriminator", "generator"] if compiled else [])
    assert SpeedWatch.seen["nhwc"] is ("model.channels_last=true" in switches)
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    assert weights.keys() == eager_weights.keys()  # no `_orig_mod.` prefixes
    for name, value in eager_weights.items():
        if value.is_floating_point():
            assert torch.allclose(weights[name], value, rtol=1e-3, atol=1e-4), name
    model = load_model(load_checkpoint(ckpt), torch.device("cpu"), ckpt)  # a plain model loads it
    assert not model._compiled
    assert all(p.is_contiguous() for p in model.parameters())  # NCHW again
    samples = model.generate(torch.randn(4, model.latent_dim))
    assert samples.dtype == torch.float32 and samples.isfinite().all()


def test_channels_last_is_refused_for_a_model_without_convolutions(make_cfg) -> None:
    with pytest.raises(GanforgeError, match=r"model.channels_last=true needs a convolutional model"):
        train(make_cfg("model=mlp", "+model.channels_last=true", "metrics=none"))


@pytest.mark.slow
def test_compile_with_a_gradient_penalty_differentiates_d_twice_eagerly(tmp_path: Path) -> None:
    """torch.compile has no double backward: the penalty runs D uncompiled, the losses compiled."""
    ckpt = trained(
        tmp_path, tmp_path / "cache", "model=wgan_gp", "model.compile=true", "max_g_steps=2", WATCH
    )
    assert SpeedWatch.seen["compiled"] == ["discriminator", "generator"]
    assert torch.load(ckpt, weights_only=True)["gan_steps"]["g_step"] == 2


@pytest.mark.slow
def test_compile_channels_last_and_bf16_train_under_ddp(tmp_path: Path, run_script) -> None:
    args = [
        *FAST, *SMALL_NETWORKS["dcgan"], "trainer=ddp_sim", "metrics=none", "trainer.precision=bf16-mixed",
        "model.compile=true", "model.channels_last=true",
    ]  # fmt: skip
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["gan_steps"] == {"g_step": 4, "d_step": 4}
    assert not any(k.startswith(("_orig_mod", "module.")) or "._orig_mod." in k for k in ckpt["state_dict"])


@pytest.mark.parametrize(
    ("model", "switches", "refused"),
    [
        ("dcgan", ["model.compile=true", "model.channels_last=true"], True),
        ("cdcgan", ["model.compile=true", "model.channels_last=true"], True),
        ("dcgan", ["model.compile=true"], False),
        ("dcgan", ["model.channels_last=true"], False),
        (
            "sngan",
            ["model.compile=true", "model.channels_last=true"],
            False,
        ),  # up-sampling, no transposed conv
    ],
)
def test_compile_with_channels_last_is_refused_on_cuda_where_it_crashes(
    make_cfg, model: str, switches: list[str], refused: bool
) -> None:
    """PyTorch issue 171622: train.py asks the module before fit on a CUDA trainer (tests/test_gpu.py
    runs that path on a GPU)."""
    module = instantiate(make_cfg(f"model={model}", *switches).model)
    if refused:
        with pytest.raises(
            GanforgeError, match=r"crashes .* on CUDA .*PyTorch issue 171622.*model.compile=false"
        ):
            module.check_switches_on_cuda("bf16-mixed", 1)
    else:
        module.check_switches_on_cuda("bf16-mixed", 1)


class CastCount(Callback):
    """Casts of D's weights (`aten._to_copy` of one of them) in each training batch."""

    per_batch: list[int] = []

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, *args: object) -> None:
        self.casts = WeightCasts({p.data_ptr() for p in module.discriminator.parameters()}).__enter__()

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, *args: object) -> None:
        self.casts.__exit__(None, None, None)
        CastCount.per_batch.append(self.casts.count)


class WeightCasts(TorchDispatchMode):
    def __init__(self, weights: set[int]) -> None:
        super().__init__()
        self.weights, self.count = weights, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._to_copy.default and args[0].data_ptr() in self.weights
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("r1", [False, True], ids=["no R1", "R1"])
def test_under_bf16_each_update_casts_each_weight_once(
    make_cfg, monkeypatch: pytest.MonkeyPatch, r1: bool
) -> None:
    """D's weights are used twice in a D update (real and fake batches), three times with R1, and
    once in a G update: one cast per update instead of one per use (the conv and linear weights;
    batch norm runs in fp32)."""
    switches = [
        "model=dcgan", *SMALL_NETWORKS["dcgan"], "trainer.precision=bf16-mixed", "metrics=none",
        "max_g_steps=2", f"+callbacks.casts._target_={__name__}.CastCount", *(["model.r1_gamma=1"] * r1),
    ]  # fmt: skip
    CastCount.per_batch = []
    train(cfg := make_cfg(*switches, run="cached"))
    monkeypatch.setattr(gan_module, "casts_cached", lambda enabled: contextlib.nullcontext())
    train(make_cfg(*switches, run="uncached"))
    layers = [
        m for m in instantiate(cfg.model).discriminator.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    weights = sum(len(list(m.parameters())) for m in layers)
    uses = 3 if r1 else 2
    assert CastCount.per_batch == [2 * weights] * 2 + [(uses + 1) * weights] * 2


def test_channels_last_batches_arrive_nhwc(tmp_path: Path) -> None:
    """The uint8 -> float conversion writes NHWC: no step copies the batch into it again."""
    trained(
        tmp_path,
        tmp_path / "cache",
        "model=dcgan",
        *SPEED_MODEL,
        "model.channels_last=true",
        "data.channels=3",
        BATCH,
    )
    assert BatchLayout.seen and all(BatchLayout.seen)


class BatchLayout(Callback):
    seen: list[bool] = []

    def on_train_batch_start(
        self, trainer: Trainer, module: LightningModule, batch: object, *args: object
    ) -> None:
        BatchLayout.seen.append(batch[0].is_contiguous(memory_format=torch.channels_last))


BATCH = f"+callbacks.layout._target_={__name__}.BatchLayout"
