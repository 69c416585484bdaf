"""Reading ganforge checkpoints: validated once, with errors a user can act on.

A checkpoint is data, even one from a stranger: `torch.load(weights_only=True)` runs no pickled
code, and the config stored inside builds only what ganforge's own configs can name (its networks,
losses, augmentations, data modules and module, and torch's optimisers and schedulers). Any other
`_target_` is refused before anything is imported or built.
"""

from __future__ import annotations

import itertools
import math
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


def check_size(checkpoint: dict[str, Any], ckpt_path: str | Path) -> None:
    """Refuse, before anything is allocated, a stored model config that builds more values than the
    checkpoint's weights hold: a 28 MB file whose config asks for hidden_dims=[100000,100000] would
    otherwise take 40 GB before load_state_dict could object. The config is built on the meta device
    (shapes, no memory; its fixed noise, drawn on the CPU, is built empty there and counted by rows).
    The weights count by the data behind them (each storage once, in its own dtype), so stride-0 views
    claiming any shape hold next to nothing."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise GanforgeError(f"{ckpt_path} holds no weights; pass a checkpoint written by train.py")
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // t.element_size()
        for t in state.values()
    }
    held = sum(storages.values())
    with torch.device("meta"):
        model = build_stored(checkpoint, "model", ckpt_path, {"num_fixed_samples": 0})
    rows = stored_config(checkpoint).model.get("num_fixed_samples", 0)  # absent: the module's small default
    if not isinstance(rows, int) or rows < 0:
        raise GanforgeError(
            f"{ckpt_path}: its model.num_fixed_samples={rows!r} is not a count; it was altered"
        )
    tensors = itertools.chain(model.parameters(), model.buffers())  # shared ones once, as in the file
    needed = sum(t.numel() or rows * math.prod(t.shape[1:]) for t in tensors)
    if needed > held:
        raise GanforgeError(
            f"refusing {ckpt_path}: its stored model config builds {needed:,} weights, but it holds "
            f"{held:,}; the config was altered or belongs to other weights, so nothing was built: use a "
            "checkpoint as train.py wrote it"
        )


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
    check_size(checkpoint, ckpt_path)
    model = build_stored(checkpoint, "model", ckpt_path)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:  # missing, unexpected or differently shaped weights
        reason = str(err).splitlines()[-1].strip()
        raise GanforgeError(
            f"{ckpt_path} holds weights its stored model config does not build ({reason}); the file was "
            "altered or damaged: use a checkpoint as train.py wrote it"
        ) from err
    model.g_step = checkpoint[STEPS]["g_step"]
    return model.to(device).eval()
