"""Reading ganforge checkpoints: validated once, with errors a user can act on.

A checkpoint is data, even one from a stranger: `torch.load(weights_only=True)` runs no pickled
code, and the config stored inside builds only what ganforge's own configs can name (its networks,
losses, augmentations, data modules and module, and torch's optimisers and schedulers). Any other
`_target_` is refused before anything is imported or built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ganforge.checkpoint_layout import CONFIG, STEPS
from ganforge.config import instantiate
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.losses import GANLoss


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
    if not isinstance(checkpoint, dict) or CONFIG not in checkpoint or STEPS not in checkpoint:
        raise GanforgeError(
            f"ckpt_path={ckpt_path} was not written by ganforge's train.py; pass a ganforge checkpoint"
        )
    return checkpoint


def stored_config(checkpoint: dict[str, Any]) -> DictConfig:
    """The resolved training config stored in the checkpoint."""
    return OmegaConf.create(checkpoint[CONFIG]["config"])


TRUSTED_PACKAGES = ("ganforge.", "torch.optim.")
TRUSTED_TYPES = (nn.Module, GANLoss, Optimizer, LRScheduler, LightningDataModule)


def untrusted_target(target: Any) -> str | None:
    """Why a stored `_target_` may not be built, or None when it may."""
    if not isinstance(target, str) or not target.startswith(TRUSTED_PACKAGES):
        return f"_target_ {target!r} is outside {' and '.join(p.rstrip('.') for p in TRUSTED_PACKAGES)}"
    try:
        obj = get_object(target)  # imports only modules of ganforge and torch.optim
    except Exception:
        return f"_target_ {target!r} does not exist in this ganforge"
    if not (isinstance(obj, type) and issubclass(obj, TRUSTED_TYPES)):
        return f"_target_ {target!r} is not a network, loss, optimiser, scheduler or data module"
    return None


def _targets(node: Any, where: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        found = [(where, node["_target_"])] if "_target_" in node else []
        return found + [t for k, v in node.items() for t in _targets(v, f"{where}.{k}")]
    if isinstance(node, list):
        return [t for i, v in enumerate(node) for t in _targets(v, f"{where}[{i}]")]
    return []


def build_stored(
    checkpoint: dict[str, Any],
    key: str,
    ckpt_path: str | Path = "the checkpoint",
    overrides: dict[str, Any] | None = None,
) -> Any:
    """Instantiate the stored config's `key` (model, data) after checking every `_target_` in it;
    `overrides` (the user's own values, e.g. a moved data_dir) replace stored keys."""
    try:
        node = OmegaConf.to_container(stored_config(checkpoint)[key], resolve=True)
    except Exception as err:
        raise GanforgeError(f"{ckpt_path} holds no usable {key} config ({type(err).__name__})") from err
    for where, target in _targets(node, key):
        reason = untrusted_target(target)
        if reason is not None:
            raise GanforgeError(
                f"refusing {ckpt_path}: its {where} {reason}; a ganforge checkpoint only builds "
                "ganforge's own classes (and torch optimisers), so this file was altered or is not ganforge's"
            )
    return instantiate(OmegaConf.create(node | (overrides or {})))


def pick_device(name: str) -> torch.device:
    """Where a loaded model runs (`device=` of eval.py, generate.py, augment.py): auto, cpu, cuda[:N]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GanforgeError(f"device={name} but no CUDA device is available; use device=cpu")
    return torch.device(name)


def load_model(
    checkpoint: dict[str, Any], device: torch.device, ckpt_path: str | Path = "the checkpoint"
) -> GANLitModule:
    """The trained GANLitModule, rebuilt from the checkpoint's own config, in eval mode on `device`."""
    model = build_stored(checkpoint, "model", ckpt_path)
    model.load_state_dict(checkpoint["state_dict"])
    model.g_step = checkpoint[STEPS]["g_step"]
    return model.to(device).eval()
