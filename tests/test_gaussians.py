"""The 2-D mixture benchmarks: data, PacGAN's mode metrics, scatter plots, and 2-D models training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ganforge.callbacks.sample_grid import scatter_plot
from ganforge.datamodules.gaussians import GaussianMixtureDataModule
from ganforge.errors import GanforgeError
from ganforge.metrics.mixture import MixtureEvaluator, mixture_metrics, mode_counts
from ganforge.networks.points import Maxout, PointDiscriminator, PointGenerator
from ganforge.train import train
from tests.conftest import SMALL_NETWORKS, assert_both_networks_learned


@pytest.mark.parametrize(("kind", "n_modes", "std"), [("ring", 8, 0.02), ("grid", 25, 0.05)])
def test_mixtures_match_the_literature(kind: str, n_modes: int, std: float) -> None:
    dm = GaussianMixtureDataModule(kind, num_samples=20_000)
    dm.setup()
    points, labels = dm.data_train.tensors
    assert dm.modes.shape == (n_modes, 2) and dm.std == std
    assert torch.bincount(labels, minlength=n_modes).min() > 20_000 / n_modes * 0.8  # roughly uniform
    offsets = points - dm.modes[labels]
    assert offsets.std().item() == pytest.approx(std, rel=0.05)
    if kind == "ring":
        assert torch.allclose(dm.modes.norm(dim=1), torch.full((8,), 2.0))
    else:
        assert sorted(set(dm.modes[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_mode_metrics_on_perfect_and_collapsed_samples() -> None:
    dm = GaussianMixtureDataModule("grid")
    g = torch.Generator().manual_seed(0)
    perfect, _ = dm.sample(2500, g)
    counts, total = mode_counts(perfect, dm.modes, dm.std)
    m = mixture_metrics(counts, total, 20)
    # a 2-D Gaussian sample lies within 3 std of its centre with probability 1 - exp(-4.5) = 98.9%
    assert m["modes_covered"] == 25 and m["high_quality"] == pytest.approx(98.89, abs=0.7)
    assert m["reverse_kl"] < 0.02

    collapsed = dm.modes[3] + 0.1 * dm.std * torch.randn(2500, 2, generator=g)  # all well inside 3 std
    collapsed[:10] = dm.modes[7]  # 10 stray samples: fewer than 20, so mode 7 is not covered
    m = mixture_metrics(*mode_counts(collapsed, dm.modes, dm.std), 20)
    assert m["modes_covered"] == 1
    p = torch.tensor([2490, 10], dtype=torch.float64) / 2500
    assert m["reverse_kl"] == pytest.approx((p * (p * 25).log()).sum().item())

    far = torch.full((100, 2), 10.0)
    m = mixture_metrics(*mode_counts(far, dm.modes, dm.std), 20)
    assert m["high_quality"] == 0 and m["modes_covered"] == 0 and math.isinf(m["reverse_kl"])


def test_evaluator_counts_every_sample() -> None:
    dm = GaussianMixtureDataModule("ring")
    settings = {"num_samples": 1000, "batch_size": 300, "seed": 0, "mixture_min_mode_samples": 20}
    evaluator = MixtureEvaluator(settings, dm.modes, dm.std)
    g = torch.Generator().manual_seed(1)

    class Exact:  # samples on the modes, as many as the noise asks for
        latent_dim, num_classes = 2, None

        def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
            return dm.sample(len(z), g)[0]

    result = evaluator.evaluate(Exact(), torch.device("cpu"))
    assert result["modes_covered"] == 8 and result["high_quality"] == pytest.approx(98.89, abs=1.0)


def test_scatter_plot_and_bad_settings(caplog: pytest.LogCaptureFixture) -> None:
    image = scatter_plot(torch.randn(50, 2), GaussianMixtureDataModule("ring").modes, size=128)
    assert image.shape == (3, 128, 128) and image.min() >= 0 and image.max() <= 1 and image.min() < 1
    with pytest.raises(GanforgeError, match=r"data.kind='spiral' is unknown"):
        GaussianMixtureDataModule("spiral")
    GaussianMixtureDataModule("ring", plot_size=128)  # the old key: still accepted, and pointed onwards
    assert "set callbacks.sample_grid.plot_size=128 instead" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp_2d", "wgan_gp_2d", "sngan_2d", "pacgan_2d", "r1_2d"])
@pytest.mark.parametrize("data", ["gaussians_ring", "gaussians_grid"])
def test_2d_models_train_and_report_mode_metrics(make_cfg, model: str, data: str) -> None:
    cfg = make_cfg(
        f"model={model}", f"data={data}", *SMALL_NETWORKS[model], "max_g_steps=4", "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1", "logger=csv", "metrics.num_samples=500", "extras.print_config=false",
        "callbacks.sample_quality.every_n_g_steps=2", "optimized_metric=val/reverse_kl_best", fast=False,
    )  # fmt: skip
    returned_metrics, where = train(cfg)
    assert {"val/modes_covered", "val/high_quality", "val/reverse_kl", "val/reverse_kl_best"} <= set(
        returned_metrics
    )
    assert returned_metrics["g_step"] == 4
    assert_both_networks_learned(Path(where["last checkpoint"]))
    assert Path(where["sample grids"].split(" (")[0], "real.png").is_file()  # scatter plots, not grids
    if model == "r1_2d":  # the R1 penalty is on, and both learning rates end at 1% of their start
        assert returned_metrics["train/r1"] > 0
        lr = cfg.model.optimizer_g.lr
        last = torch.load(where["last checkpoint"], map_location="cpu", weights_only=False)
        final = [o["param_groups"][0]["lr"] for o in last["optimizer_states"]]
        assert final == pytest.approx([0.01 * lr] * 2)
        assert returned_metrics["lr-Adam/generator"] > 0 and returned_metrics["lr-Adam-1/discriminator"] > 0


def test_pacgan_judges_packs_of_samples() -> None:
    d = PointDiscriminator(dim=2, hidden_dims=[8], pack=4)
    x = torch.randn(12, 2)
    assert d(x).shape == (3,)
    # one score per pack: changing a sample changes only its own pack's score
    y = x.clone()
    y[5] += 1.0
    changed = (d(x) != d(y)).tolist()
    assert changed == [False, True, False]
    with pytest.raises(GanforgeError, match=r"make data\.batch_size a multiple of 4"):
        d(torch.randn(10, 2))
    with pytest.raises(GanforgeError, match="pack must be >= 1"):
        PointDiscriminator(pack=0)


def test_maxout_critic_takes_the_max_over_each_units_pieces() -> None:
    assert Maxout(3)(torch.tensor([[1.0, 5.0, 2.0, -1.0, -4.0, -2.0]])).tolist() == [[5.0, -1.0]]
    d = PointDiscriminator(dim=2, hidden_dims=[8, 8], maxout=5)
    hidden = [m for m in d.net if isinstance(m, torch.nn.Linear)][:-1]
    assert [h.out_features for h in hidden] == [40, 40]  # 8 units of 5 pieces each
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in d.net)
    assert d(torch.randn(6, 2)).shape == (6,)
    with pytest.raises(GanforgeError, match="maxout must be >= 1"):
        PointDiscriminator(maxout=0)


def test_generator_batch_norm_normalises_each_hidden_layer() -> None:
    g = PointGenerator(latent_dim=2, hidden_dims=[16, 16, 16], batch_norm=True)
    norms = [m for m in g.net if isinstance(m, torch.nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [16, 16, 16]
    activations = {}
    norms[1].register_forward_hook(lambda m, i, o: activations.update(out=o))
    g(torch.randn(64, 2) * 100 + 50)  # badly scaled noise: normalised all the same in training mode
    assert activations["out"].mean(0).abs().max() < 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in PointGenerator().net)
