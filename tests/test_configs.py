"""Every config composes, every model x data pair instantiates, and the step/strategy logic holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from ganforge.checks import device_count
from ganforge.config import compose_app_config, instantiate_group
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.train import gan_strategy
from tests.conftest import CONF


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def data_overrides(data: str, tmp_path: Path) -> list[str]:
    return [f"data={data}"] + ([f"data.data_dir={tmp_path}"] if data == "image_folder" else [])


def test_groups_are_complete() -> None:
    assert options("model") == [
        "cdcgan", "csngan", "dcgan", "lsgan", "mlp", "mlp_2d", "pacgan_2d", "r1_2d", "sngan",
        "sngan_2d", "wgan_gp", "wgan_gp_2d",
    ]  # fmt: skip
    assert options("data") == [
        "celeba", "cifar10", "digits", "fashion_mnist",
        "gaussians_grid", "gaussians_ring", "image_folder", "mnist",
    ]  # fmt: skip
    assert options("trainer") == ["cpu", "ddp", "ddp_sim", "default", "gpu", "gpu_fast", "mps"]
    assert {"dcgan_mnist", "dcgan_celeba"} <= set(options("experiment"))
    assert {"default", "fdr", "overfit", "limit", "profiler"} <= set(options("debug"))


POINT_MODELS = [m for m in options("model") if m.endswith("_2d")]
IMAGE_MODELS = [m for m in options("model") if m not in POINT_MODELS]
POINT_DATA = [d for d in options("data") if d.startswith("gaussians_")]
IMAGE_DATA = [d for d in options("data") if d not in POINT_DATA]
PAIRS = [(m, d) for m in IMAGE_MODELS for d in IMAGE_DATA] + [
    (m, d) for m in POINT_MODELS for d in POINT_DATA
]


@pytest.mark.parametrize(("model", "data"), PAIRS)
def test_model_data_pairs_instantiate(make_cfg, tmp_path: Path, model: str, data: str) -> None:
    cfg = make_cfg(f"model={model}", *data_overrides(data, tmp_path), fast=False)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    dm = instantiate(cfg.data)
    gan = instantiate(cfg.model)
    assert isinstance(gan, GANLitModule)
    z = torch.randn(4, gan.latent_dim)
    labels = gan.balanced_labels(4) if gan.conditional else None
    shape = (4, dm.dim) if data in POINT_DATA else (4, dm.channels, dm.image_size, dm.image_size)
    assert gan(z, labels).shape == shape
    pack = getattr(gan.discriminator, "pack", 1)  # PacGAN: one output per pack of samples
    assert gan.discriminate(gan(z, labels), labels).shape == (4 // pack,)


@pytest.mark.parametrize("loss", options("model/loss"))
def test_losses_instantiate(make_cfg, loss: str) -> None:
    gan = instantiate(make_cfg(f"model/loss={loss}").model)
    assert gan.loss.name == loss


@pytest.mark.parametrize("callbacks", options("callbacks"))
@pytest.mark.parametrize("logger", options("logger"))
def test_callbacks_and_loggers_instantiate(make_cfg, callbacks: str, logger: str) -> None:
    cfg = make_cfg(f"callbacks={callbacks}", f"logger={logger}")
    for group, base in ((cfg.callbacks, Callback), (cfg.logger, Logger)):
        built = instantiate_group(group)
        targets = [node._target_ for node in (group or {}).values() if node and "_target_" in node]
        assert [type(x).__name__ for x in built] == [t.rsplit(".", 1)[1] for t in targets]
        assert all(isinstance(x, base) for x in built)
    assert (instantiate_group(cfg.callbacks) == []) == (callbacks == "none")
    run_dir = Path(cfg.paths.output_dir).resolve()
    for lg in instantiate_group(cfg.logger):  # every logger writes into the run's directory
        assert Path(lg.save_dir).resolve().is_relative_to(run_dir), (type(lg).__name__, lg.save_dir)


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_sim", "mps"])
def test_trainer_configs_compose(make_cfg, trainer: str) -> None:
    cfg = make_cfg(f"trainer={trainer}", "max_g_steps=4", fast=False)
    assert cfg.trainer.max_steps == 8  # 4 generator steps x (1 D + 1 G)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    gpu_precision = "bf16-mixed" if bf16 else "32-true"
    expected = {  # accelerator, devices, strategy, precision
        "default": ("auto", 1, "auto", "32-true"),
        "cpu": ("cpu", 1, "auto", "32-true"),
        "gpu": ("gpu", 1, "auto", gpu_precision),
        "ddp": ("gpu", -1, "ddp_find_unused_parameters_true", gpu_precision),
        "ddp_sim": ("cpu", 2, "ddp_find_unused_parameters_true", "32-true"),
        "mps": ("mps", 1, "auto", "32-true"),
    }[trainer]
    t = cfg.trainer
    assert (t.accelerator, t.devices, t.strategy, t.precision) == expected


@pytest.mark.parametrize("trainer", ["default", "cpu", "ddp_sim"])
def test_cpu_trainers_instantiate(make_cfg, trainer: str) -> None:
    cfg = make_cfg(f"trainer={trainer}")
    t = instantiate(cfg.trainer, strategy=gan_strategy(cfg.trainer), logger=False)
    assert t.max_steps == 8
    if trainer == "ddp_sim":
        assert isinstance(t.strategy, DDPStrategy) and t.num_devices == 2


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose_and_build(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}", fast=False)
    OmegaConf.to_container(cfg, resolve=True)
    instantiate(cfg.model)
    assert cfg.tags and cfg.max_g_steps > 0


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_overlays_compose(make_cfg, debug: str) -> None:
    cfg = make_cfg(f"debug={debug}")
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"


def test_issue_command_composes_celeba_ddp_over_4_devices(make_cfg) -> None:
    """`python train.py model=dcgan data=celeba trainer.devices=4`: CelebA 64x64, GAN-safe DDP x4."""
    cfg = make_cfg("model=dcgan", "data=celeba", "trainer.devices=4", fast=False)
    assert cfg.data.image_size == 64 and cfg.model.generator.image_size == 64
    assert gan_strategy(cfg.trainer) == "ddp_find_unused_parameters_true"
    # accelerator=auto falls back to CPU here; the strategy object is built the same way as on GPUs
    t = instantiate(cfg.trainer, accelerator="cpu", strategy=gan_strategy(cfg.trainer), logger=False)
    assert isinstance(t.strategy, DDPStrategy) and t.num_devices == 4
    assert t.strategy._ddp_kwargs["find_unused_parameters"] is True


def test_step_budget_counts_both_optimizers(make_cfg) -> None:
    cfg = make_cfg("model.d_steps_per_g=5", "max_g_steps=100")
    assert cfg.trainer.max_steps == 600  # 100 x (5 D + 1 G)
    assert make_cfg("max_g_steps=null", "trainer.max_epochs=3").trainer.max_steps == -1


@pytest.mark.parametrize(
    ("devices", "accelerator", "expected"),
    [
        (1, "auto", 1),
        (4, "cpu", 4),
        ("2", "cpu", 2),
        ("0,1,3", "gpu", 3),
        ([0, 1], "gpu", 2),
        ("auto", "cpu", 1),
    ],
)
def test_device_count(devices, accelerator: str, expected: int) -> None:
    assert device_count(devices, accelerator) == expected


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_plain_ddp_is_refused_with_the_fix(make_cfg, strategy: str) -> None:
    cfg = make_cfg(f"trainer.strategy={strategy}", "trainer.devices=2")
    with pytest.raises(GanforgeError, match=rf"{strategy}_find_unused_parameters_true"):
        gan_strategy(cfg.trainer)


def test_single_device_keeps_auto(make_cfg) -> None:
    assert gan_strategy(make_cfg().trainer) == "auto"


def test_importing_ganforge_changes_nothing_global() -> None:
    """Resolvers and warning filters are set up by the entry points (prepare_hydra), not on import:
    a notebook or a library user importing ganforge keeps its own OmegaConf and warnings state."""
    probe = """
import sys, warnings
from omegaconf import OmegaConf
callers = []
def recording(original):
    def record(*args, **kwargs):
        callers.append(sys._getframe(1).f_globals.get("__name__", ""))
        return original(*args, **kwargs)
    return record
warnings.filterwarnings = recording(warnings.filterwarnings)
warnings.simplefilter = recording(warnings.simplefilter)
import ganforge.train, ganforge.evaluate, ganforge.generate, ganforge.augment
import hydra_plugins.ganforge.launchers
assert not OmegaConf.has_resolver("pid"), "resolvers registered on import"
ours = [c for c in callers if c.startswith("ganforge")]
assert not ours, f"warning filters set on import by {ours}"
from ganforge.config import prepare_hydra
prepare_hydra()
assert OmegaConf.has_resolver("pid") and "ganforge.config" in callers
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_local_default_applies_after_the_overlays_and_before_the_command_line(tmp_path: Path) -> None:
    """conf/local/default.yaml (git-ignored) holds a machine's own settings; without it nothing changes."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    for own in (conf / "local").glob("*.yaml"):  # this checkout's own local files, if it has any
        own.unlink()
    assert compose_app_config(conf, []).seed == 12345
    (conf / "local" / "default.yaml").write_text("# @package _global_\nseed: 7\ntask_name: mine\n")
    assert compose_app_config(conf, []).seed == 7
    assert compose_app_config(conf, ["debug=fdr"]).task_name == "mine"  # after the debug overlay
    assert compose_app_config(conf, ["seed=3"]).seed == 3  # before the command line
    assert "/conf/local/*" in (CONF.parent / ".gitignore").read_text().splitlines()
