"""Resuming with settings that differ from the checkpoint's: each difference is applied, refused or
warned about, in one line, before anything is built.

- Refused (the checkpoint cannot continue them): the networks, the number of classes, the optimiser or
  scheduler class, the data set (what defines its images: not where they are or how they are loaded),
  and a budget the checkpoint has already reached.
- Applied: optimiser and scheduler settings (a lower learning rate for a run that diverged:
  `GANLitModule.on_load_checkpoint` writes them into the restored states, which would otherwise win),
  `model.d_steps_per_g` (the budget stays in generator steps: `resumed_max_steps`), `model.ema_decay`
  (an EMA added on resume starts from the generator's weights) and `max_g_steps`.
- Warned about (they change the run): every other model setting (the loss, penalties, augmentation),
  the batch size, the precision and the number of devices.
Speed switches, loggers, callbacks, metrics and paths change nothing the run computes: silent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ganforge.checkpoint_layout import STEPS
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)

REFUSED_MODEL_KEYS = ("generator", "discriminator", "num_classes")
OPTIMIZERS = ("optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d")
APPLIED_MODEL_KEYS = ("d_steps_per_g", "ema_decay")
SILENT_MODEL_KEYS = ("compile", "channels_last", "cuda_graphs")  # how the run computes, not what
# where the images are and how they are loaded, not which images: everything else defines the data set
DATA_LOADING_KEYS = (
    "data_dir", "num_workers", "pin_memory", "pack", "pack_dir", "download", "in_memory", "skip_unreadable",
)  # fmt: skip
WARNED_KEYS = ("data.batch_size", "trainer.precision", "trainer.devices", "trainer.num_nodes")


def _container(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class _Unset:
    """A key one of the two configs does not have (a setting newer or older than the checkpoint)."""

    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


def _differences(before: Any, after: Any, where: str) -> list[tuple[str, Any, Any]]:
    """(key, before, after) of every leaf that differs; dictionaries compared key by key."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(k for k in after if k not in before)]
        pairs = ((k, before.get(k, UNSET), after.get(k, UNSET)) for k in keys)
        return [d for k, b, a in pairs for d in _differences(b, a, f"{where}.{k}")]
    return [] if before == after else [(where, before, after)]


def _described(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key} {before!r} -> {after!r}" for key, before, after in changes)


def data_option(cfg: DictConfig, target: str) -> str:
    """The `data=<name>` override that selects the data module `target`, read off conf/data/."""
    for path in sorted(Path(cfg.paths.root_dir, "conf", "data").glob("*.yaml")):
        if f"_target_: {target}\n" in path.read_text():
            return f"data={path.stem}"
    return f"data._target_={target}"


def check_resume(ckpt_path: str, stored: DictConfig, g_step: int, cfg: DictConfig) -> None:
    """Refuse what cannot continue `stored` (the checkpoint's config, at `g_step`), say what is
    applied and warn about what changes the run. A run started again in its own directory (a
    requeued job, a synthesize chain restarted after training) may have reached its budget."""
    refusal = (
        "; resume with the settings the checkpoint was trained with, or start a new run without ckpt_path"
    )
    for key in REFUSED_MODEL_KEYS:
        before, after = _container(stored, f"model.{key}"), _container(cfg, f"model.{key}")
        if before != after:
            raise GanforgeError(f"ckpt_path={ckpt_path} holds a different model.{key} ({before}){refusal}")
    for key in OPTIMIZERS:
        before, after = _container(stored, f"model.{key}"), _container(cfg, f"model.{key}")
        target = [(x or {}).get("_target_") for x in (before, after)]
        if target[0] != target[1]:
            raise GanforgeError(
                f"ckpt_path={ckpt_path} was trained with model.{key}={target[0]}, not {target[1]} "
                f"(its state cannot continue another class){refusal}"
            )
    before_data, after_data = _container(stored, "data"), _container(cfg, "data")
    changed_data = [
        change
        for change in _differences(before_data, after_data, "data")
        if change[0].split(".")[1] not in (*DATA_LOADING_KEYS, "batch_size") and change[1] is not UNSET
    ]
    changed_data = [c for c in changed_data if c[0] == "data._target_"] or changed_data  # another data set
    if changed_data:
        stored_data = [
            data_option(cfg, before) if key == "data._target_" else f"{key}={before}"
            for key, before, _ in changed_data
        ]
        raise GanforgeError(
            f"ckpt_path={ckpt_path} was trained on other data ({_described(changed_data)}); resume on the "
            f"checkpoint's data ({', '.join(stored_data)}), or start a new run without ckpt_path"
        )
    max_g_steps = cfg.get("max_g_steps")
    restart = Path(ckpt_path).resolve().parent.parent == Path(cfg.paths.output_dir).resolve()
    if max_g_steps is not None and max_g_steps <= g_step and not restart:
        raise GanforgeError(
            f"ckpt_path={ckpt_path} has trained {g_step} generator steps already, max_g_steps={max_g_steps}: "
            f"nothing to train; pass max_g_steps above {g_step} to continue it"
        )

    before_model, after_model = _container(stored, "model"), _container(cfg, "model")
    model_changes = _differences(before_model, after_model, "model")
    applied = [c for c in model_changes if c[0].split(".")[1] in (*OPTIMIZERS, *APPLIED_MODEL_KEYS)]
    warned = [
        c
        for c in model_changes
        if c[0].split(".")[1] not in (*OPTIMIZERS, *APPLIED_MODEL_KEYS, *SILENT_MODEL_KEYS)
    ]
    warned += [
        c for key in WARNED_KEYS for c in _differences(_container(stored, key), _container(cfg, key), key)
    ]
    if applied:
        log.info("resuming with new settings, applied from g_step %d: %s", g_step, _described(applied))
    if any(key == "model.ema_decay" and before is None for key, before, _ in applied):
        log.warning("model.ema_decay added on resume: the EMA starts from the generator at g_step %d", g_step)
    if warned:
        log.warning(
            "resuming with settings that change the run from g_step %d: %s", g_step, _described(warned)
        )


def resumed_max_steps(checkpoint: dict[str, Any], max_g_steps: int, d_steps_per_g: int) -> int:
    """Lightning's `max_steps` (optimizer steps of both networks) that ends a resumed run at exactly
    `max_g_steps`, whatever `d_steps_per_g` the checkpoint was trained with: generator steps fall on
    the discriminator steps that are multiples of `d_steps_per_g`."""
    d_step, g_step = checkpoint[STEPS]["d_step"], checkpoint[STEPS]["g_step"]
    remaining = max_g_steps - g_step
    last_d_step = (d_step // d_steps_per_g + remaining) * d_steps_per_g
    return checkpoint["global_step"] + (last_d_step - d_step) + remaining


def apply_optimizer_settings(
    checkpoint: dict[str, Any], optimizers: list[Any], schedulers: list[Any]
) -> None:
    """Write this config's optimiser and scheduler settings (the `_partial_` factories' arguments) into
    the checkpoint's states before Lightning restores them. A learning rate under a scheduler sets the
    schedule's base: the factor the schedule has reached so far carries over."""
    for factory, state in zip(optimizers, checkpoint.get("optimizer_states", []), strict=False):
        for group in state["param_groups"]:
            for key, value in getattr(factory, "keywords", {}).items():
                if key == "lr" and "initial_lr" in group:
                    if group["initial_lr"] != value:
                        group["lr"] = value * group["lr"] / group["initial_lr"]
                        group["initial_lr"] = value
                elif key in group:
                    group[key] = tuple(value) if isinstance(group[key], tuple) else value
    restored = [f for f in schedulers if f is not None]
    for factory, state, opt_state in zip(
        restored, checkpoint.get("lr_schedulers", []), checkpoint.get("optimizer_states", []), strict=False
    ):
        state.update({k: v for k, v in getattr(factory, "keywords", {}).items() if k in state})
        groups = opt_state["param_groups"]
        if "base_lrs" in state:
            state["base_lrs"] = [g.get("initial_lr", g["lr"]) for g in groups]
        if "_last_lr" in state:
            state["_last_lr"] = [g["lr"] for g in groups]


def fit_ema_state(state_dict: dict[str, Any], has_ema: bool) -> None:
    """An EMA added on resume starts from the generator (`AveragedModel` copies the weights at its
    first update when it has averaged none); one dropped on resume is left out of the state."""
    ema = [k for k in state_dict if k.startswith("generator_ema.")]
    if not has_ema:
        for key in ema:
            del state_dict[key]
    elif not ema:
        for key in [k for k in state_dict if k.startswith("generator.")]:
            state_dict[f"generator_ema.module.{key.removeprefix('generator.')}"] = state_dict[key].clone()
        state_dict["generator_ema.n_averaged"] = torch.tensor(0, dtype=torch.long)
