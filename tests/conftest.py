"""Config composition for tests: the real conf/ through Hydra's compose API, outputs in tmp_path."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

import ganforge.config
from ganforge.config import compose_app_config
from ganforge.gan_module import GANLitModule
from ganforge.losses import NonSaturatingLoss
from ganforge.networks.mlp import MLPDiscriminator, MLPGenerator
from ganforge.train import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

ganforge.config.prepare_hydra()  # what the entry scripts do before Hydra composes

# Small networks and budgets: real training, seconds on a 2-core CPU.
FAST = [
    "data.image_size=16",
    "data.batch_size=16",
    "max_g_steps=4",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",  # W&B has its own tests (test_tracking.py); its start-up costs seconds per run
    "metrics.num_samples=200",
    "metrics.num_reference=500",
    "metrics.classifier.epochs=2",
    "metrics.classifier.width=16",
    "extras.print_config=false",
]

_SMALL_DCGAN = ["model.generator.base_channels=8", "model.discriminator.base_channels=8"]
_SMALL_SNGAN = ["model.generator.width=16", "model.discriminator.width=16"]
SMALL_NETWORKS = {
    "dcgan": _SMALL_DCGAN,
    "lsgan": _SMALL_DCGAN,
    "wgan_gp": _SMALL_DCGAN,
    "cdcgan": _SMALL_DCGAN,
    "sngan": _SMALL_SNGAN,
    "csngan": _SMALL_SNGAN,
    **{
        m: ["model.generator.hidden_dims=[32,32]", "model.discriminator.hidden_dims=[32,32]"]
        for m in ("mlp_2d", "wgan_gp_2d", "sngan_2d", "pacgan_2d", "r1_2d")
    },
    "mlp": ["model.generator.hidden_dims=[32,64,64]", "model.discriminator.hidden_dims=[64,32]"],
}


def compose_train(overrides: list[str], output_dir: Path | None = None, config: str = "train") -> DictConfig:
    """A config as `python <config>.py <overrides>` would build it (hydra node removed)."""
    return compose_app_config(CONF, overrides, output_dir, config)


def add_callback(cfg: DictConfig, cls: type) -> DictConfig:
    """Add a test's own callback to a composed config; the config instantiates it like any other."""
    with open_dict(cfg):
        cfg.callbacks[cls.__name__] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    return cfg


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One metrics cache per test session: the metric classifiers train once, not per test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """compose_train with logs, data and outputs under tmp_path and the FAST settings first."""

    def make(*overrides: str, fast: bool = True, run: str = "run") -> DictConfig:
        out = tmp_path / run
        base = [
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.cache_dir={cache_dir}",
        ]
        model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "dcgan")
        small = [*FAST, *SMALL_NETWORKS[model]] if fast else []
        return compose_train([*base, *small, *overrides], output_dir=out)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def run_script(tmp_path: Path, cache_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run an entry script (train.py, eval.py) as a user would: a CPU-only subprocess in tmp_path,
    logging under tmp_path/logs and sharing the session's metrics cache."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}

    def run(args: list[str], script: str = "train.py") -> subprocess.CompletedProcess[str]:
        paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache_dir}"]
        cmd = [sys.executable, str(ROOT / script), *paths, *args]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    return run


@pytest.fixture
def run_cli(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_script` in this process: the entry script's Hydra main with its argv, stdout and stderr
    captured, SystemExit turned into the exit code (and its message, as the interpreter prints it).
    For tests of what a mistake prints: no 15 s of imports per case."""

    def run(args: list[str], script: str = "train.py") -> subprocess.CompletedProcess[str]:
        paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache_dir}"]
        monkeypatch.setattr(sys, "argv", [str(ROOT / script), *paths, *args])
        monkeypatch.chdir(tmp_path)
        capfd.readouterr()
        code, message = 0, ""
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except SystemExit as exit_:
            if isinstance(exit_.code, str):
                code, message = 1, exit_.code + "\n"
            else:
                code = exit_.code or 0
        finally:
            GlobalHydra.instance().clear()
        out = capfd.readouterr()
        return subprocess.CompletedProcess(sys.argv, code, out.out, out.err + message)

    return run


SHAPES = ("bottom_right", "top_left", "top_right")  # ImageFolder's label order: sorted folder names


def write_shapes(root: Path, per_class: int = 100, size: int = 16, seed: int = 0) -> Path:
    """An easy labelled image set as PNG class folders: a bright square in one corner per class,
    jittered by up to 1 pixel, on dark noise."""
    rng = np.random.default_rng(seed)
    corners = {"bottom_right": (9, 9), "top_left": (1, 1), "top_right": (1, 9)}
    for name in SHAPES:
        (root / name).mkdir(parents=True)
        top, left = corners[name]
        for i in range(per_class):
            image = rng.integers(0, 40, (size, size), dtype=np.uint8)
            dy, dx = rng.integers(-1, 2, 2)
            image[top + dy : top + dy + 6, left + dx : left + dx + 6] = 255
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return root


def shapes_data(root: Path) -> list[str]:
    return [
        "data=image_folder", f"data.data_dir={root}", "data.channels=1", "data.image_size=16",
        "data.val_fraction=0.1", "data.test_fraction=0.2", "data.num_workers=0", "data.batch_size=32",
    ]  # fmt: skip


def trained(tmp_path: Path, cache_dir: Path, *overrides: str, fast: list[str] = FAST) -> Path:
    """A tiny model trained for a few steps (digits at 16x16 unless told); its last checkpoint."""
    model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache_dir}"]
    cfg = compose_train([*paths, *fast, *SMALL_NETWORKS[model], "metrics=none", *overrides], tmp_path / "run")
    train(cfg)
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_wandb_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where nobody ran `wandb login`: no key, no netrc, no WANDB_MODE."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def assert_both_networks_learned(checkpoint: Path) -> None:
    """Every weight matrix and kernel of G and of D received a gradient at some step (Adam's second
    moment is not zero; the first is the last gradient alone at SNGAN's beta1 = 0, and a saturated
    hinge step gives none): a loss that is finite but detached from a network leaves it at zero.
    Biases are left out: a critic's output bias cancels in E[D(fake)] - E[D(real)]."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["optimizer_states"]
    assert len(state) == 2
    for network, optimizer in zip(("generator", "discriminator"), state, strict=True):
        moments = [s["exp_avg_sq"] for s in optimizer["state"].values() if s["exp_avg_sq"].ndim >= 2]
        assert moments, f"{network}: no optimizer state"
        untouched = sum(int(not m.any()) for m in moments)
        assert untouched == 0, f"{network}: {untouched} of {len(moments)} parameter tensors got no gradient"


def tiny_module(**options: object) -> GANLitModule:
    """A GANLitModule of two one-layer MLPs on 4x4 images (latent 3), for tests of its own logic."""
    return GANLitModule(
        MLPGenerator(image_size=4, channels=1, latent_dim=3, hidden_dims=(8,)),
        MLPDiscriminator(image_size=4, channels=1, hidden_dims=(8,)),
        NonSaturatingLoss(),
        torch.optim.Adam,
        torch.optim.Adam,
        **options,
    )
