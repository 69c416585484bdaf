"""Stabilisers: penalties against functions with known gradients, EMA recurrence, spectral norm,
and every model configuration training on CPU."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from lightning.pytorch import Callback

from ganforge.config import instantiate
from ganforge.diffaugment import DiffAugment, cutout, translation
from ganforge.errors import GanforgeError
from ganforge.evaluate import evaluate
from ganforge.gan_module import GANLitModule
from ganforge.networks.dcgan import DCGANDiscriminator
from ganforge.regularizers import gradient_penalty, mode_seeking_ratio, r1_penalty
from ganforge.train import train, warn_slow_ema
from tests.conftest import (
    CONF,
    add_callback,
    assert_both_networks_learned,
    compose_train,
    shapes_data,
    tiny_module,
    write_shapes,
)

W = torch.tensor([1.0, 2.0, 2.0])  # ||W|| = 3


def linear_critic(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1) @ W


def test_gradient_penalty_on_a_known_gradient_norm() -> None:
    real, fake = torch.randn(16, 3), torch.randn(16, 3)
    assert gradient_penalty(linear_critic, real, fake).item() == pytest.approx((3 - 1) ** 2)
    unit = lambda x: x.flatten(1) @ (W / 3)  # noqa: E731 - a 1-Lipschitz critic: no penalty
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_differentiable_in_the_critic() -> None:
    w = W.clone().requires_grad_(True)
    gradient_penalty(lambda x: x @ w, torch.randn(8, 3), torch.randn(8, 3)).backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(w.grad, 2 * (3 - 1) * W / 3, atol=1e-5)


def test_r1_penalty() -> None:
    assert r1_penalty(linear_critic, torch.randn(5, 3)).item() == pytest.approx(9.0)
    quadratic = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731 - gradient x: R1 = mean ||x||^2
    x = torch.randn(6, 3)
    assert r1_penalty(quadratic, x).item() == pytest.approx(x.pow(2).sum(1).mean().item(), rel=1e-6)


def test_mode_seeking_ratio_is_image_distance_over_noise_distance() -> None:
    z = torch.tensor([[0.0, 0.0], [1.0, 3.0]])  # pair (z[0], z[1]): mean |dz| = 2
    fake = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 5.0]], requires_grad=True)  # mean |dG| = 2
    ratio = mode_seeking_ratio(fake, z)
    assert ratio.item() == pytest.approx(1.0)
    (1 / ratio).backward()  # the penalty pushes the pair's images apart
    assert fake.grad[0].sum() > 0 and fake.grad[1].sum() < 0
    same = mode_seeking_ratio(torch.ones(4, 3), torch.randn(4, 2))  # noise ignored: ratio 0
    assert same.item() == 0.0


def test_mode_seeking_pairs_share_their_class(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = GANLitModule.forward

    def spy(self, z, labels=None):
        if torch.is_grad_enabled():  # the generator update (D's fakes are made under no_grad)
            seen.append(labels.clone())
        return original(self, z, labels)

    monkeypatch.setattr(GANLitModule, "forward", spy)
    metrics, _ = train(make_cfg("model=cdcgan", "model.mode_seeking=1.0", "max_g_steps=2"))
    assert "train/mode_seeking_ratio" in metrics and math.isfinite(metrics["train/g_loss"])
    for labels in seen:
        h = len(labels) // 2
        assert torch.equal(labels[:h], labels[h : 2 * h])


def test_spectral_norm_keeps_the_largest_singular_value_at_one() -> None:
    torch.manual_seed(0)
    d = DCGANDiscriminator(32, 3, base_channels=8, spectral_norm=True, norm="none").train()
    for _ in range(30):  # power iteration converges as the network runs
        d(torch.randn(4, 3, 32, 32))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in convs]
    assert len(sigmas) == 4 and all(abs(s - 1) < 0.05 for s in sigmas), sigmas


def test_invalid_stabiliser_settings(make_cfg) -> None:
    with pytest.raises(GanforgeError, match=r"model.ema_decay=1.5 must be a number > 0 and < 1 or null"):
        train(make_cfg("model.ema_decay=1.5"))
    with pytest.raises(GanforgeError, match=r"model.discriminator.norm='group' is unknown"):
        train(make_cfg("model.discriminator.norm=group"))
    with pytest.raises(GanforgeError, match=r"model.r1_interval must be >= 1"):
        train(make_cfg("model.r1_interval=0"))


def test_lazy_r1_is_due_every_interval_with_the_interval_as_weight() -> None:
    """StyleGAN2's lazy R1: the penalty on every 4th D step, 4 times as heavy: the same average pull."""
    module = tiny_module(r1_gamma=10.0, r1_interval=4)
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    due = []
    for step in range(9):
        module.d_step = step
        penalties = module.penalties(real, fake, None, module.r1_due())
        if "r1" in penalties:
            weight, value = penalties["r1"]
            assert weight == 0.5 * 10.0 * 4
            assert torch.equal(value, r1_penalty(module.discriminator, real))
            due.append(step)
    assert due == [0, 4, 8]


class RecordGenerator(Callback):
    """The generator's first weight tensor after every generator step."""

    after_g_step: ClassVar[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if len(RecordGenerator.after_g_step) < pl_module.g_step:
            RecordGenerator.after_g_step.append(next(pl_module.generator.parameters()).detach().clone())


@pytest.mark.slow
def test_ema_follows_the_documented_decay(make_cfg) -> None:
    cfg = add_callback(make_cfg("model.ema_decay=0.5", "max_g_steps=3"), RecordGenerator)
    RecordGenerator.after_g_step.clear()
    train(cfg)
    theta = RecordGenerator.after_g_step
    assert len(theta) == 3
    # ema_1 = theta_1 (the first update copies); ema_k = 0.5 ema_(k-1) + 0.5 theta_k
    expected = theta[0]
    for t in theta[1:]:
        expected = 0.5 * expected + 0.5 * t
    last = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), weights_only=True)
    ema_weight = next(v for k, v in last["state_dict"].items() if k.startswith("generator_ema.module."))
    assert torch.allclose(ema_weight, expected, atol=1e-6)
    assert not torch.allclose(ema_weight, theta[-1])  # an average, not the latest weights


MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.endswith("_2d"))  # images


@pytest.mark.slow
@pytest.mark.parametrize("data", ["digits", "labelled_folder"])
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_both_networks(make_cfg, tmp_path: Path, model: str, data: str) -> None:
    """On the default data and on a labelled PNG folder (3 classes), EMA on."""
    conditional = model in ("cdcgan", "csngan")
    overrides = [] if data == "digits" else shapes_data(write_shapes(tmp_path / data, 20))
    overrides += ["model.num_classes=3"] if conditional and data != "digits" else []
    cfg = make_cfg(f"model={model}", "max_g_steps=3", "model.ema_decay=0.9", *overrides)
    metrics, where = train(cfg)
    assert metrics["g_step"] == 3
    assert_both_networks_learned(Path(where["last checkpoint"]))
    assert ("val/class_accuracy" in metrics) == conditional
    if model == "wgan_gp":
        assert "train/gp" in metrics and cfg.model.d_steps_per_g == 5


@pytest.mark.slow
def test_eval_uses_the_ema_generator(make_cfg, cache_dir: Path, tmp_path: Path) -> None:
    cfg = make_cfg("model.ema_decay=0.9")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    overrides = [f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}", "metrics.num_samples=100"]
    overrides += ["metrics.num_reference=500", "metrics.classifier.epochs=2", "metrics.classifier.width=16"]
    eval_cfg = compose_train(overrides, tmp_path / "eval", config="eval")
    values, protocol = evaluate(eval_cfg)
    assert protocol["generator"] == "EMA weights" and math.isfinite(values["fid"])


# --- DiffAugment -------------------------------------------------------------------------------------


def test_diffaugment_is_differentiable_for_every_policy() -> None:
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        x = torch.rand(4, 3, 16, 16, requires_grad=True)
        DiffAugment(policy)(x).pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, policy


def test_translation_moves_content_within_the_ratio() -> None:
    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = translation(x, 0.125)  # at most 2 pixels on a 16-pixel side
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # moved, not lost
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 16 - 8, pos % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert (dy != 0).any() and (dx != 0).any()  # per-sample shifts


def test_cutout_zeroes_a_square_of_the_ratio() -> None:
    out = cutout(torch.ones(8, 3, 16, 16), 0.5)
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert torch.equal(zeros, torch.full((8,), 64))  # an 8x8 square per image
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)  # the same square in every channel


def test_unknown_policy() -> None:
    with pytest.raises(GanforgeError, match=r"DiffAugment policy \['blur'\] is unknown"):
        DiffAugment("color,blur")


@pytest.mark.slow
def test_diffaugment_sees_real_and_fake_in_both_updates(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = DiffAugment.forward

    def spy(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(DiffAugment, "forward", spy)
    metrics, _ = train(make_cfg("model/d_augment=diffaugment", "max_g_steps=4"))
    assert math.isfinite(metrics["train/d_loss"])
    assert len(calls) == 4 * 3  # per batch: real and fake in the D step, fake in the G step


def test_the_old_name_model_augment_still_builds_diffaugment_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`model/augment=diffaugment` (and checkpoints that store model.augment) keep working."""
    cfg = compose_train(["model/augment=diffaugment"])
    assert "d_augment" not in cfg.model and cfg.model.augment._target_.endswith("DiffAugment")
    with caplog.at_level(logging.WARNING, logger="ganforge.gan_module"):
        model = instantiate(cfg.model)
    assert isinstance(model.d_augment, DiffAugment)
    assert caplog.messages == [
        "model.augment is deprecated: it is model.d_augment (model/d_augment=diffaugment)"
    ]
    both = compose_train(["model/augment=diffaugment", "model/d_augment=diffaugment"])
    with pytest.raises(GanforgeError, match=r"old name of model\.d_augment: set only d_augment"):
        instantiate(both.model)


def test_an_ema_too_slow_for_the_budget_is_named_with_a_decay_that_fits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ganforge.train"):
        warn_slow_ema(0.999, 600)  # 0.999^600 = 55% of the weight still on the first steps
        warn_slow_ema(0.99, 600)
        warn_slow_ema(None, 600)
    assert caplog.messages == [
        "model.ema_decay=0.999 still weights the first steps by 55% after max_g_steps=600, and samples, "
        "metrics and exports come from the EMA: use model.ema_decay<=0.9950 for this budget"
    ]
