"""Hydra glue: config resolvers, instantiation with readable errors, the config tree printout."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import rich.syntax
import rich.tree
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ganforge import sweep
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
    OmegaConf.register_new_resolver("not", lambda value: not value, replace=True)
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


def run_app(task: Callable[[], Any], conf_dir: str | Path, config_name: str) -> None:
    """What an entry script's `__main__` runs: prepare_hydra(), then its Hydra app, with a mistake in
    the command line (a key that does not exist, an option its group does not have, an override that
    does not parse, a config file that is not YAML) reported as one `error:` line that names the fix,
    and a grid sweep with failed jobs ends in one (after it has run them all). HYDRA_FULL_ERROR=1
    keeps Hydra's own report (and a full traceback for everything else)."""
    prepare_hydra()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        task()
    else:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: the error is read here
        try:
            task()
        except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
            message = command_line_error(err, conf_dir, config_name, sys.argv[1:])
            raise SystemExit(f"error: {message}") from None
        except yaml.YAMLError as err:  # a config file, e.g. the machine's own conf/local/default.yaml
            raise SystemExit(f"error: {yaml_error(err)}") from None
        finally:
            del os.environ["HYDRA_FULL_ERROR"]
    if sweep.failed_grid_jobs:  # the sweep went on past them and wrote its summary
        raise SystemExit(f"error: {sweep.failed_grid_jobs[0]}")


def command_line_error(err: Exception, conf_dir: str | Path, config_name: str, argv: list[str]) -> str:
    """Hydra's composition error as one line, with the nearest valid key or option."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = sorted(err.options)
        near = difflib.get_close_matches(name, options, n=1)
        guess = f"; did you mean {group}={near[0]}?" if near else ""
        return f"{group}={name} is not a {group} config (options: {', '.join(options)}){guess}"
    unknown = re.match(r"Could not override '([^']+)'", str(err))
    if unknown and isinstance(err.__cause__, ConfigKeyError | ConfigAttributeError):
        key = unknown.group(1)
        others = [a for a in argv if "=" in a and not a.split("=", 1)[0].lstrip("+~").startswith(key)]
        near = difflib.get_close_matches(key, config_keys(conf_dir, config_name, others), n=1, cutoff=0.7)
        guess = f"; did you mean {near[0]}?" if near else ""
        return f"{key} is not a config key (a new one takes a +: +{key}=...){guess}"
    lines = [line.strip() for line in [str(err), str(err.__cause__ or "")] if line.strip()]
    message = " ".join(line.splitlines()[0] for line in lines)
    quoted = quoted_override(err.override) if isinstance(err, OverrideParseException) else None
    if quoted is not None:  # a path or name with = , : or spaces in it: what the grammar reads as syntax
        return f"{err.override} does not parse ({message}); quote the value: '{quoted}'"
    return message


def quoted_override(override: str) -> str | None:
    """`key="value"` when that parses and `override` (key=value) does not, else None."""
    key, sep, value = override.partition("=")
    if not sep or '"' in value or value[:1] in "[{" or re.match(r"\w+\(", value):
        return None  # a list, dict or sweep (choice, range, ...) written wrongly: not a string
    try:
        OverridesParser.create().parse_overrides([f'{key}="{value}"'])
    except OverrideParseException:
        return None
    return f'{key}="{value}"'


def yaml_error(err: yaml.YAMLError) -> str:
    """A config file's YAML mistake as one line: the file, where, what."""
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f"a config file is not valid YAML: {' '.join(str(err).split())}"
    mark, opened = err.problem_mark, err.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}"
    context = f" ({err.context} at line {opened.line + 1})" if err.context and opened else ""
    return f"{where} is not valid YAML: {err.problem}{context}; fix the file there"


def config_keys(conf_dir: str | Path, config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the config these overrides compose (the defaults when they do not)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=[o for o in overrides if "," not in o])
        except Exception:
            cfg = compose(config_name)

    def walk(node: Any, prefix: str) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        else:
            yield prefix.rstrip(".")

    return list(walk(OmegaConf.to_container(cfg, resolve=False), ""))


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
