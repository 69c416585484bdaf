"""Checks of the values a user sets, run before anything is printed, built or trained: each mistake
is one `error:` line that names the key and a value that works (Lightning's and torch's own errors
come later, as tracebacks about derived values such as a doubled `max_steps`)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union

import torch
from hydra.utils import get_object
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf
from pydantic import ConfigDict, Field, PydanticUserError, StringConstraints, TypeAdapter, ValidationError

from ganforge.errors import GanforgeError
from ganforge.tracking import wandb_offline

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


class Rule(NamedTuple):
    """What a value must be (a type pydantic checks), a value that works, and the type in words when
    the type reads badly."""

    type: Any
    example: Any
    words: str = ""


Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]

# What a parameter of this name takes in any `_target_` a config builds: the targets' own type hints
# say `int` where only a count >= 1 works (a latent size of 0 fails deep inside torch, a sample grid
# every 0 steps divides by zero), and nothing about ranges.
RULES = {
    "latent_dim": Rule(Count, 100),
    "hidden_dims": Rule(list[Count], [256, 512]),
    "image_size": Rule(Count, 32),
    "channels": Rule(Count, 3),
    "base_channels": Rule(Count, 64),
    "max_channels": Rule(Count, 512),
    "width": Rule(Count, 128),
    "batch_size": Rule(Count, 64),
    "num_workers": Rule(Annotated[int, Field(ge=0)], 2),
    "d_steps_per_g": Rule(Count, 1),
    "num_fixed_samples": Rule(Count, 64),
    "every_n_g_steps": Rule(Count, 250),
    "last_every_n_g_steps": Rule(Count, 50),
    "last_every_minutes": Rule(Annotated[float, Field(gt=0)], 10),
    "every_n_minutes": Rule(Annotated[float, Field(gt=0)], 5),
    "lr": Rule(Annotated[float, Field(gt=0)], 2e-4),
    "betas": Rule(tuple[Beta, Beta], [0.5, 0.999]),
    "weight_decay": Rule(NonNegative, 0),
    "gradient_penalty": Rule(NonNegative, 10),
    "r1_gamma": Rule(NonNegative, 10),
    "mode_seeking": Rule(NonNegative, 1),
    "ema_decay": Rule(Annotated[float, Field(gt=0, lt=1)] | None, 0.999),
    "log_every_n_steps": Rule(Count | None, 50),
    "num_nodes": Rule(Count, 1),
    "devices": Rule(
        Count
        | Literal[-1, "auto"]
        | list[Annotated[int, Field(ge=0)]]
        | Annotated[str, StringConstraints(pattern=r"^\s*(auto|-1|\d+(\s*,\s*\d+)*\s*,?)\s*$")],
        1,
        "a number of devices >= 1, -1 (all of them), auto, or the devices' indices ([0,1])",
    ),
}

# The downstream experiment's lists (augment.py, and train.py's synthesize.downstream).
DOWNSTREAM_SETTINGS = {
    "strategies": Rule(list[str], ["real", "mixed"]),
    "ratios": Rule(list[float], [0.5, 1, 2]),
    "weights": Rule(list[float], [0.1, 0.5]),
    "seeds": Rule(list[int], [0, 1, 2]),
    "synthetic_filters": Rule(list[str], ["none", "drs"]),
}
# Keys of train.py's config that no `_target_` takes.
TRAIN_SETTINGS = {
    "seed": Rule(int | None, 12345),
    "tags": Rule(list[str], ["dev"]),
    "float32_matmul_precision": Rule(Literal["highest", "high", "medium"], "high"),
    "metrics.num_samples": Rule(Count, 2000),
    "metrics.num_reference": Rule(Count, 10000),
    "metrics.batch_size": Rule(Count, 250),
    **{f"synthesize.downstream.{name}": rule for name, rule in DOWNSTREAM_SETTINGS.items()},
}

PYDANTIC = ConfigDict(arbitrary_types_allowed=True, strict=True)


def valid(adapter: TypeAdapter[Any], value: Any) -> bool:
    """Strictly (1.5 is no whole number, "abc" no number) as JSON, where a config's list stands for a
    tuple, or as the Python value it is (10 is a numbers.Number)."""
    return passes(adapter.validate_json, json.dumps(value, default=str)) or passes(
        adapter.validate_python, value
    )


def passes(validate: Callable[[Any], Any], value: Any) -> bool:
    try:
        validate(value)
    except ValidationError:
        return False
    return True


def parameter_rules(target: Any) -> dict[str, Rule]:
    """Each parameter's type hint and default; a class's **kwargs reach its bases' parameters (the data
    modules pass theirs on). A function whose hints do not evaluate here is left out."""
    functions = (
        [c.__init__ for c in reversed(inspect.getmro(target)) if "__init__" in vars(c) and c is not object]
        if inspect.isclass(target)
        else [target]
    )
    rules = {}
    for function in functions:
        try:
            hints = typing.get_type_hints(function)
        except (NameError, TypeError):
            continue
        parameters = inspect.signature(function).parameters
        for name, hint in hints.items():
            default = parameters[name].default if name in parameters else None
            if name != "return":
                rules[name] = Rule(hint, None if default is inspect.Parameter.empty else default)
    return rules


WORDS = {
    int: ("a whole number", "whole numbers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "true or false"),
    str: ("a string", "strings"),
    NoneType: ("null", "null"),
}
BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def describe(hint: Any, plural: bool = False) -> str:
    """A type hint in words: `list[Annotated[int, Field(ge=1)]]` is "a list of whole numbers >= 1"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        constraints = [c for m in hint.__metadata__ for c in getattr(m, "metadata", [m])]
        bounds = [
            f"{sign} {getattr(c, b)}"
            for c in constraints
            for b, sign in BOUNDS
            if getattr(c, b, None) is not None
        ]
        return " ".join([describe(args[0], plural), " and ".join(bounds)]).strip()
    if origin is Literal:
        return one_of([str(a) for a in args])
    if origin in (Union, UnionType):
        members = [a for a in args if a in WORDS or typing.get_origin(a)] or list(args)  # no tensors here
        members = [a for a in members if not (a is int and float in members)]  # "a number" says both
        choices = [str(v) for a in members if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        parts = [describe(a, plural) for a in members if typing.get_origin(a) is not Literal]
        parts = list(dict.fromkeys(parts + ([one_of(choices)] if choices else [])))
        return f"{', '.join(parts[:-1])} or {parts[-1]}" if len(parts) > 1 else parts[0]
    if origin is tuple and args and args[-1] is not Ellipsis:
        kinds = {describe(a, True) for a in args}
        return f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"
    if origin in (list, tuple, Sequence, set):
        return f"a list of {describe(args[0], True)}" if args else "a list"
    return WORDS[hint][plural] if hint in WORDS else f"a {getattr(hint, '__name__', hint)}"


def one_of(choices: list[str]) -> str:
    choices = list(dict.fromkeys(choices))
    return choices[0] if len(choices) == 1 else f"one of {', '.join(choices)}"


def as_override(value: Any) -> str:
    """A value as the command line writes it: [0.5,abc], null, true."""
    if isinstance(value, list | tuple):
        return f"[{','.join(map(as_override, value))}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{as_override(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def check_value(parent: DictConfig, name: str, key: str, rule: Rule) -> None:
    """One value against its rule; a single value where a list belongs becomes that list (`tags=foo`
    is [foo], not the letters f, o, o)."""
    if OmegaConf.is_interpolation(parent, name) or OmegaConf.is_missing(parent, name):
        return  # an interpolation is checked where it points; a missing value is reported when read
    value = parent[name]
    if builds_objects(value):
        return  # nodes of their own (e.g. trainer.plugins: a list of _target_ nodes)
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        adapter = TypeAdapter(rule.type, config=PYDANTIC)
    except (PydanticUserError, NameError):
        return  # a hint pydantic cannot read (a forward reference to a name its module does not import)
    if valid(adapter, value):
        return
    if (
        typing.get_origin(rule.type) in (list, Sequence)
        and not isinstance(value, list)
        and valid(adapter, [value])
    ):
        parent[name] = [value]
        return
    example = "" if rule.example is None else f" (e.g. {key}={as_override(rule.example)})"
    raise GanforgeError(f"{key}={as_override(value)} must be {rule.words or describe(rule.type)}{example}")


def builds_objects(value: Any) -> bool:
    """Whether a config value is, or holds, a node with a `_target_`: what it is only once built."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict):
        return "_target_" in value or any(builds_objects(v) for v in value.values())
    if isinstance(value, list):
        return any(builds_objects(v) for v in value)
    return False


def target_nodes(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every node of a config with a `_target_`, by its dotted key, outer ones first (an interpolated
    node is visited where it points)."""
    if isinstance(node, DictConfig) and "_target_" in node:
        yield prefix.rstrip("."), node
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        child = node[key]
        if isinstance(child, DictConfig | ListConfig):
            yield from target_nodes(child, f"{prefix}{key}.")


def check_values(cfg: DictConfig, settings: Mapping[str, Rule]) -> None:
    """The `settings` (dotted keys), and every value a config passes to a `_target_` against the target's
    own type hints made stricter by RULES, before anything is built: `data.image_size=32px`,
    `model.generator.latent_dim=0` or `model.optimizer_g.betas=[0.5,abc]` are one line here, not
    tracebacks from deep inside torch."""
    for key, rule in settings.items():
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if isinstance(parent, DictConfig) and name in parent:
            check_value(parent, name, key, rule)
    for key, node in target_nodes(cfg):
        try:
            rules = parameter_rules(get_object(node._target_))
        except ImportError:
            continue  # a _target_ that does not exist: instantiating it says so
        for name in node:
            rule = stricter(RULES.get(name), rules.get(name))
            if rule is not None and not str(name).startswith("_"):
                check_value(node, name, f"{key}.{name}" if key else name, rule)


def stricter(rule: Rule | None, own: Rule | None) -> Rule | None:
    """RULES' rule for a name, with null allowed where the target's own hint allows it (e.g. a
    callback's optional interval), else the target's own rule."""
    if rule is None or own is None:
        return rule or own
    if typing.get_origin(own.type) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        own.type
    ):
        return Rule(rule.type | None, rule.example, rule.words)
    return rule


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
    check_model_fits_data(cfg)
    check_values(cfg, TRAIN_SETTINGS)
    check_devices(cfg.trainer)
    if "wandb" in (cfg.get("logger") or {}):
        wandb_offline()  # decided now: WANDB_MODE=online without a key is refused before W&B starts
