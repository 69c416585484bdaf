"""Checks of the values a user sets, run before anything is printed, built or trained: each mistake
is one `error:` line that names the key and a value that works (Lightning's and torch's own errors
come later, as tracebacks about derived values such as a doubled `max_steps`)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)


def raw(cfg: DictConfig, key: str) -> Any:
    """The value as given; an interpolation that does not resolve is None here (checked where used)."""
    return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)


def device_count(devices: Any, accelerator: str) -> int:
    """How many devices a Lightning `devices` value asks for (-1/'auto' read off this machine)."""
    if isinstance(devices, str):
        if devices.strip() == "auto":
            return 1 if accelerator == "cpu" else max(torch.cuda.device_count(), 1)
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices)
    if isinstance(devices, Sequence):
        return len(devices)
    if devices == -1:
        return (os.cpu_count() or 1) if accelerator == "cpu" else torch.cuda.device_count()
    return int(devices)


def check_budget(cfg: DictConfig) -> None:
    value = raw(cfg, "max_g_steps")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GanforgeError(
            f"max_g_steps={value} is not a number of generator steps; pass a whole number >= 1 (e.g. "
            "max_g_steps=1500), or max_g_steps=null to train for trainer.max_epochs"
        )


def check_learning_rates(cfg: DictConfig) -> None:
    for name in ("optimizer_g", "optimizer_d"):
        lr = raw(cfg, f"model.{name}.lr")
        if lr is None:
            continue
        if isinstance(lr, bool) or not isinstance(lr, Real) or not lr > 0:
            raise GanforgeError(f"model.{name}.lr={lr} must be a number > 0 (e.g. model.{name}.lr=2e-4)")


def check_devices(trainer: DictConfig) -> None:
    """A GPU trainer where torch sees none is refused; several devices without a GPU are several
    CPU processes, which Lightning starts without a word: say so."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GanforgeError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU here; train on the CPU with "
            "trainer=cpu, or check CUDA_VISIBLE_DEVICES and the driver (nvidia-smi)"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise GanforgeError("trainer=mps needs Apple silicon and PyTorch's MPS backend; use trainer=cpu")
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )
    devices = trainer.get("devices", "auto")
    count = device_count(devices, "cpu" if on_cpu else accelerator)
    if on_cpu and count > 1 and rank_zero_only.rank == 0:  # DDP's other processes check again: say it once
        log.warning(
            "trainer.devices=%s without a GPU: %d CPU processes (DDP over gloo) will share this machine's "
            "%d cores; for one process drop trainer.devices",
            devices,
            count,
            os.cpu_count() or 1,
        )


def check_batch_fits(batch_size: int, n_train: int, data_name: str) -> None:
    """`data_name` "" for data that are not images (the 2-D mixtures)."""
    if n_train < batch_size:
        what = f"{n_train} {data_name} training images" if data_name else f"{n_train} training samples"
        fits = 1 << (n_train.bit_length() - 1) if n_train else 1
        raise GanforgeError(
            f"data.batch_size={batch_size} is larger than the {what}; lower it, e.g. data.batch_size={fits}"
        )


def check_model_fits_data(cfg: DictConfig) -> None:
    """A model reads its sizes from the data config (`${data.dim}`, `${data.image_size}`, ...); a 2-D
    point model on images, or an image model on points, would otherwise fail as a bare
    InterpolationKeyError."""
    wanted = set(re.findall(r"\$\{data\.(\w+)\}", OmegaConf.to_yaml(cfg.model)))
    missing = sorted(k for k in wanted if k not in cfg.data)
    if missing:
        keys = ", ".join(f"data.{k}" for k in missing)
        raise GanforgeError(
            f"this model reads {keys}, which this data set does not have: 2-D point models "
            "(model=mlp_2d, wgan_gp_2d, sngan_2d, pacgan_2d, r1_2d) train on data=gaussians_grid or "
            "gaussians_ring, image models (dcgan, wgan_gp, sngan, ...) on image data (digits, mnist, ...)"
        )


def check_train_config(cfg: DictConfig) -> None:
    """Everything train.py can check from the config alone."""
    check_budget(cfg)
    check_learning_rates(cfg)
    check_model_fits_data(cfg)
    check_devices(cfg.trainer)
