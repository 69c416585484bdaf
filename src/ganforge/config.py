"""Hydra glue: config resolvers, instantiation with readable errors, the config tree printout."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rich.syntax
import rich.tree
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ganforge.cluster import launcher_size
from ganforge.errors import GanforgeError
from ganforge.gan_module import optimizer_steps
from ganforge.tracking import run_group, run_name, wandb_offline, wandb_run_id

log = logging.getLogger(__name__)


def _optimizer_steps(g_steps: int | None, d_steps_per_g: int) -> int:
    return -1 if g_steps is None else optimizer_steps(int(g_steps), int(d_steps_per_g))


def gpu_precision() -> str:
    """`${gpu_precision:}`: bf16-mixed on a GPU that computes in bfloat16 (Ampere and newer), else
    full fp32 (16-mixed, with a gradient scaler per network, is a choice: trainer.precision=16-mixed)."""
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def step_budget(table: Any, size: int) -> int:
    """`${step_budget:TABLE,N}`: the budget of the largest size in TABLE ({size: steps}) that N reaches
    (the smallest size's budget below it): a training budget that follows the data's size."""
    budgets = sorted((int(k), int(v)) for k, v in table.items())
    return next((steps for least, steps in reversed(budgets) if size >= least), budgets[0][1])


def register_resolvers() -> None:
    """`${optimizer_steps:G,K}`: Lightning's step count for G generator steps at K D steps per G step.
    `${pid:}`: the launching process's id, which keeps run directories of simultaneous launches apart
    (cached: a submitit job, in another process, resolves its sweep directory to the launcher's).
    `${launcher_size:KEY,DEFAULT}`: see ganforge.cluster. `${gpu_precision:}`: see gpu_precision.
    `${cuda_available:}`: whether torch sees a GPU (data.pin_memory's default).
    `${wandb_offline:}`, `${wandb_run_id:}`, `${run_name:}`, `${run_group:}`: see ganforge.tracking.
    `${step_budget:TABLE,N}`: see step_budget."""
    OmegaConf.register_new_resolver("optimizer_steps", _optimizer_steps, replace=True)
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("launcher_size", launcher_size, replace=True)
    OmegaConf.register_new_resolver("gpu_precision", gpu_precision, replace=True)
    OmegaConf.register_new_resolver("cuda_available", lambda: torch.cuda.is_available(), replace=True)
    OmegaConf.register_new_resolver("wandb_run_id", wandb_run_id, replace=True)
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("run_group", run_group, replace=True)
    OmegaConf.register_new_resolver("step_budget", step_budget, replace=True)


def prepare_hydra() -> None:
    """What runs before Hydra composes a ganforge config: the entry scripts, submitit jobs
    (hydra_plugins.ganforge.launchers) and compose_app_config call it; importing ganforge changes
    nothing global.

    Besides the resolvers: conf/hydra/launcher/submitit_{slurm,local}.yaml share their names with the
    plugin's schemas, so Hydra checks them against those (typos in launcher keys are caught) and warns
    that this matching is deprecated. Each file is complete on its own and keeps working once Hydra
    stops matching, so that warning is silenced."""
    register_resolvers()
    warnings.filterwarnings(
        "ignore", message=r"(?s).*hydra/launcher/submitit_\w+' is validated against ConfigStore schema"
    )


def compose_app_config(
    conf_dir: str | Path, overrides: list[str], output_dir: str | Path | None = None, config: str = "train"
) -> DictConfig:
    """A config as `python <config>.py <overrides>` builds it, for code that runs a task outside
    the Hydra app (tests, benchmarks): HydraConfig is set (run directory `output_dir`) and the
    hydra node removed, as the task sees it."""
    prepare_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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


def instantiate(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, but a GanforgeError raised inside comes out as itself."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, GanforgeError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group like `callbacks` or `logger`."""
    if not group:
        return []
    return [
        instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node
    ]


@rank_zero_only
def print_config_tree(
    cfg: DictConfig,
    order: Sequence[str] = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras"),
) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        tree.add(key, style="bold").add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
