"""Reading ganforge checkpoints: validated once, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ganforge.callbacks.store_config import CHECKPOINT_KEY
from ganforge.config import instantiate
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule


def load_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, after checking it exists, loads safely and was written by train.py."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise GanforgeError(
            f"ckpt_path={ckpt_path} does not exist; pass a checkpoint file, e.g. <run>/checkpoints/last.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise GanforgeError(
            f"ckpt_path={ckpt_path} is not a readable checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "gan_steps" not in checkpoint:
        raise GanforgeError(
            f"ckpt_path={ckpt_path} was not written by ganforge's train.py; pass a ganforge checkpoint"
        )
    return checkpoint


def stored_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in the checkpoint."""
    return OmegaConf.create(checkpoint[CHECKPOINT_KEY]["config"])


def load_model(checkpoint: dict[str, Any], device: torch.device) -> GANLitModule:
    """The trained GANLitModule, rebuilt from the checkpoint's own config, in eval mode on `device`."""
    model = instantiate(stored_config(checkpoint).model)
    model.load_state_dict(checkpoint["state_dict"])
    model.g_step = checkpoint["gan_steps"]["g_step"]
    return model.to(device).eval()
