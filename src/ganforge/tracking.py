"""Experiment tracking across loggers: W&B online/offline choice, images, run metadata, clean finish,
and logs that continue when a run starts again in its own directory (a requeued SLURM job).

W&B goes online when the user is logged in (WANDB_API_KEY or a netrc entry) and offline otherwise,
without prompting; WANDB_MODE, when set, decides. Offline runs end with the `wandb sync` command.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def wandb_offline() -> bool:
    """True unless W&B can reach an account: WANDB_MODE decides when set, else any stored API key.
    WANDB_MODE=online without a key is refused here, not by wandb once the run has started."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        logged_in = netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        logged_in = False
    if mode == "online" and not logged_in:
        raise GanforgeError(
            "WANDB_MODE=online but W&B has no API key here; log in (`wandb login` or WANDB_API_KEY=...), "
            "or unset WANDB_MODE to log offline and upload later with `wandb sync`"
        )
    return not logged_in


def check_logger_config(loggers: DictConfig | None) -> None:
    """Refuse, before anything starts, what W&B cannot do offline: uploading checkpoints."""
    wandb = (loggers or {}).get("wandb")
    if wandb and wandb.get("log_model") and wandb.get("offline"):
        raise GanforgeError(
            "logger.wandb.log_model uploads checkpoints, which an offline W&B run cannot do; log in "
            "(`wandb login` or WANDB_API_KEY) or set logger.wandb.log_model=false"
        )


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, except that a run started again in its directory keeps the rows it
    logged before (Lightning deletes an existing metrics.csv). Rows at or after the first step logged
    again, written after the checkpoint it resumed from, give way to the new ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._continuing = False

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        earlier = path.read_bytes() if path.is_file() else None
        with warnings.catch_warnings():  # "previous log files ... will be deleted": not here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if earlier is not None:
            path.write_bytes(earlier)
            with path.open(newline="") as f:
                writer.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])
            self._continuing = True
        return writer

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        writer = self.experiment  # made on first use: it tells whether this start continues a log
        if self._continuing and step is not None:
            self._continuing = False
            path = Path(writer.metrics_file_path)
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if float(r["step"]) < step]
            with path.open("w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=writer.metrics_keys)
                out.writeheader()
                out.writerows(rows)
        super().log_metrics(metrics, step)


def log_run_metadata(
    loggers: list[Logger], cfg: DictConfig, model: LightningModule, datamodule: LightningDataModule
) -> None:
    """The resolved config, the networks' sizes and a long tail's class counts, once per run."""
    params: dict[str, Any] = {
        "model/params_generator": sum(p.numel() for p in model.generator.parameters()),
        "model/params_discriminator": sum(p.numel() for p in model.discriminator.parameters()),
    }
    counts = getattr(datamodule, "train_class_counts", None)
    if counts is not None:  # which classes are rare, and how rare
        params["data/train_class_counts"] = counts
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(config | params)


def log_image(loggers: list[Logger], key: str, image: Tensor, step: int, g_step: int) -> None:
    """A [C, H, W] image in [0, 1] to every logger that shows images (W&B, TensorBoard), as the uint8
    pixels `torchvision.utils.save_image` writes to the run's PNG: wandb casts float pixels to uint8
    without scaling them, which turns [0, 1] black. W&B's row carries `g_step`, as every other row."""
    pixels = image.mul(255).add_(0.5).clamp_(0, 255).to("cpu", torch.uint8)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({key: [wandb.Image(pixels.permute(1, 2, 0).numpy())], "g_step": g_step}, step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, pixels, global_step=step)


def finish(trainer: Trainer | None, failed: bool, preempted: bool = False) -> list[str]:
    """Close W&B runs with the right exit code (a failed job must not show as finished; a requeued
    one shows as preempted); returns the `wandb sync` commands for runs that were offline."""
    commands = []
    for logger in trainer.loggers if trainer is not None and trainer.is_global_zero else []:
        if isinstance(logger, WandbLogger):  # other ranks hold a stand-in, not a run
            run: Any = logger.experiment  # created at start (config logging), so this opens nothing new
            if run.offline:
                commands.append(sync_command(run))
            if preempted:
                run.mark_preempting()
            finish_wandb_run(run, exit_code=1 if failed else 0)
    return commands


def sync_command(run: Any) -> str:
    """`wandb sync` for an offline run; a run resumed after a requeue left one folder per start, and
    W&B uploads them, in order, into one run."""
    sync_dir = Path(run.settings.sync_dir)
    pieces = sorted(sync_dir.parent.glob(f"offline-run-*-{run.id}*"))
    if len(pieces) > 1:
        return f"wandb sync {sync_dir.parent}/offline-run-*-{run.id}*"
    return f"wandb sync {sync_dir}"


def wandb_run_id() -> str:
    """The W&B run id of this run directory, the same at every start of it (a requeued job resumes
    its W&B run instead of opening a new one). Made once and kept in `<run>/wandb/run_id`; created
    without a race when several DDP ranks ask at once."""
    path = Path(HydraConfig.get().runtime.output_dir) / "wandb" / "run_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"run_id.{os.getpid()}")
        tmp.write_text(secrets.token_hex(6))
        try:
            os.link(tmp, path)  # atomic and exclusive: the first rank's id wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def finish_wandb_run(run: Any, exit_code: int) -> None:
    """Finish a W&B run so that its files are complete when this returns.

    `run.finish()` returns before W&B's service has written the run's `.wandb` file out (it closes
    the file asynchronously), so a `wandb sync` or a reader started right away can see an empty or
    partial file. Tearing the service down waits for it, and drops W&B's process-wide settings that
    would otherwise leak into the next run in this process; skipped while another run is open.
    """
    import wandb

    run.finish(exit_code=exit_code)
    if wandb.run is None:
        wandb.teardown()


def run_name() -> str:
    """The run directory's name; in a multirun `<job number>_<overrides>` (readable in the W&B table)."""
    hydra = HydraConfig.get()
    num = OmegaConf.select(hydra, "job.num", default=None, throw_on_missing=False)
    if hydra.mode == RunMode.MULTIRUN and num is not None:  # composed but not launched: no job yet
        return f"{num}_{hydra.job.override_dirname}".rstrip("_")
    return Path(hydra.runtime.output_dir).name


def run_group() -> str | None:
    """All jobs of one multirun share a group: the multirun directory's name."""
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None
