"""The training task: instantiate data, model, callbacks, loggers and trainer from the config, fit,
and say where everything went."""

from __future__ import annotations

import logging
import math
import shlex
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from ganforge import cluster
from ganforge.atomic import StopSignals
from ganforge.callbacks.checkpoint import BestCheckpoint, GANCheckpoint
from ganforge.callbacks.interrupt import GracefulInterrupt
from ganforge.callbacks.sample_grid import SampleGrid
from ganforge.callbacks.store_config import StoreConfig
from ganforge.checkpoint import load_checkpoint, stored_config
from ganforge.checkpoint_io import SafeCheckpointIO
from ganforge.checkpoint_layout import DIRECTORY, LAST, STEPS, find_checkpoint, newest_checkpoint
from ganforge.checks import check_batch_fits, check_train_config, device_count
from ganforge.config import (
    instantiate,
    instantiate_group,
    print_config_tree,
)
from ganforge.datamodules.pack import died
from ganforge.errors import GanforgeError, Interrupted, Requeued, TrainingDiverged, one_line_errors
from ganforge.gan_module import GANLitModule
from ganforge.metrics.features import ensure_inception_weights
from ganforge.resume import check_resume, resumed_max_steps
from ganforge.sweep import BASIC_SWEEPER, in_multirun, rerun_command, write_job_record
from ganforge.synthesize import check_synthesize, synthesize, synthesize_on
from ganforge.tracking import check_logger_config, finish, log_run_metadata

log = logging.getLogger(__name__)

# Lightning's messages that do not apply: ganforge checkpoints are meant to hold the weights after
# the step (the state training continues from); evaluation happens in a callback, not a validation
# loop; logging counts batches across epochs, so an epoch shorter than the logging interval still
# logs; a run that finds checkpoints in its own directory continues from them (a requeued job); the
# pytree one is Lightning's own deprecation, the set_vital one torchdata's (its stateful loader calls
# a torch API that torch deprecated); and Lightning's tips advertise other products.
INAPPLICABLE_WARNINGS = (
    "Using ModelCheckpoint with manual optimization",
    r"You passed in a `val_dataloader` but have no `validation_step`",
    r"Checkpoint directory .* exists and is not empty",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`isinstance\(treespec, LeafSpec\)`",
    r"'set_vital' is deprecated",
)
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def drop_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip:")


@contextmanager
def without_inapplicable_messages() -> Iterator[None]:
    """Only around building and fitting the trainer: importing ganforge changes no global filter."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    with warnings.catch_warnings():
        for message in INAPPLICABLE_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop_tips)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop_tips)


# Alternating D/G updates leave one network's parameters out of each backward pass, which plain
# DDP rejects ("Expected to have finished reduction..."); these variants tolerate it.
GAN_DDP = {
    "ddp": "ddp_find_unused_parameters_true",
    "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
    "ddp_fork": "ddp_fork_find_unused_parameters_true",
    "ddp_notebook": "ddp_notebook_find_unused_parameters_true",
}


def warn_slow_ema(decay: float | None, g_steps: int | None) -> None:
    """An EMA whose memory is long against the budget still holds much of the untrained generator at
    the end, and grids, metrics and exports come from it: say so, with a decay that fits."""
    if decay is None or not g_steps or not 0 < decay < 1 or decay**g_steps <= 0.05:
        return
    fits = 0.05 ** (1 / g_steps)
    log.warning(
        "model.ema_decay=%g still weights the first steps by %.0f%% after max_g_steps=%d, and samples, "
        "metrics and exports come from the EMA: use model.ema_decay<=%.4f for this budget",
        decay, 100 * decay**g_steps, g_steps, fits,
    )  # fmt: skip


def gan_strategy(trainer_cfg: DictConfig) -> Any:
    """The trainer's strategy, made safe for GANs: several devices under 'auto' get GAN-safe DDP."""
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, str) and strategy in GAN_DDP:
        raise GanforgeError(
            f"trainer.strategy={strategy} cannot train a GAN (each update leaves the other network's "
            f"parameters unused); use trainer=ddp or trainer.strategy={GAN_DDP[strategy]}"
        )
    several = trainer_cfg.get("num_nodes", 1) > 1 or (
        device_count(trainer_cfg.get("devices", "auto"), trainer_cfg.get("accelerator", "auto")) > 1
    )
    if strategy == "auto" and several:
        return GAN_DDP["ddp"]
    return strategy


def resume_from(cfg: DictConfig) -> str | None:
    """The checkpoint this run continues from, if any.

    A run directory that already holds a checkpoint is this run started again (a requeued SLURM job,
    a reused hydra.run.dir): it continues from its own newest checkpoint whatever ckpt_path says, so a
    restart never goes back to where the first start began, and nothing in it is overwritten from
    scratch. Otherwise `ckpt_path` is a checkpoint file, a run directory (its newest checkpoint), or
    `last`: the newest checkpoint of this task's runs and multirun jobs."""
    run_dir = Path(cfg.paths.output_dir)
    own = find_checkpoint(run_dir)
    if own is not None:
        log.info("%s already holds %s: continuing from it", run_dir, own)
        return str(own)
    value = cfg.get("ckpt_path")
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        task_dir = Path(cfg.paths.log_dir) / cfg.task_name
        runs = [d for d in (*task_dir.glob("runs/*"), *task_dir.glob("multiruns/*/*")) if d != run_dir]
        found = newest_checkpoint(runs)
        if found is None:
            raise GanforgeError(
                f"ckpt_path=last: no run under {task_dir} has a checkpoint yet; train without ckpt_path "
                "first, or pass a checkpoint file or run directory"
            )
        log.info("ckpt_path=last: continuing from %s", found)
        return str(found)
    if Path(value).is_dir():
        found = find_checkpoint(value)
        if found is None:
            raise GanforgeError(
                f"ckpt_path={value} is a directory without {DIRECTORY}/{LAST} or g_step_*.ckpt; pass "
                "a run directory that has them, or a checkpoint file"
            )
        return str(found)
    return str(value)


def load_resumable(ckpt_path: str, cfg: DictConfig) -> dict[str, Any]:
    """The checkpoint to continue from; a damaged one (truncated by a full disk or a copy cut short)
    is refused with the newest checkpoint beside it (or, for ckpt_path=last, in any run) that loads."""
    try:
        return load_checkpoint(ckpt_path)
    except GanforgeError as err:
        damaged = Path(ckpt_path)
        if not damaged.is_file():
            raise
        folders = {damaged.parent}
        if str(cfg.get("ckpt_path")) == "last":
            task_dir = Path(cfg.paths.log_dir) / cfg.task_name
            folders |= {d / DIRECTORY for d in (*task_dir.glob("runs/*"), *task_dir.glob("multiruns/*/*"))}
        others = [c for f in folders for c in f.glob("*.ckpt") if c != damaged]
        for candidate in sorted(others, key=lambda c: c.stat().st_mtime, reverse=True):
            try:
                load_checkpoint(candidate)
            except GanforgeError:
                continue
            own = damaged.parent.parent.resolve() == Path(cfg.paths.output_dir).resolve()
            fix = f"move {damaged} aside to continue from it" if own else f"pass ckpt_path={candidate}"
            raise GanforgeError(f"{err}; the newest checkpoint that loads is {candidate}: {fix}") from None
        raise


def report(trainer: L.Trainer, cfg: DictConfig) -> dict[str, str]:
    """Where the checkpoint, the sample grids and the metrics went."""
    where = {"run directory": str(cfg.paths.output_dir)}
    for cb in trainer.callbacks:
        if isinstance(cb, GANCheckpoint) and cb.last_model_path:
            where["last checkpoint"] = cb.last_model_path
        if isinstance(cb, BestCheckpoint) and cb.best_model_path:
            where["best checkpoint"] = (
                f"{cb.best_model_path} ({cb.monitor} {cb.best_model_score:.4g} at g_step {cb.best_g_step})"
            )
        if isinstance(cb, SampleGrid) and cb.last_saved is not None:
            where["sample grids"] = f"{cb.dirpath} (latest: {cb.path_for(cb.last_saved).name})"
    profiler = trainer.profiler  # Lightning names a profiler's file <stage>-<filename>.txt
    if getattr(profiler, "dirpath", None) and getattr(profiler, "filename", None):
        profile = Path(profiler.dirpath) / f"fit-{profiler.filename}.txt"
        if profile.is_file():
            where["profile"] = str(profile)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            where["TensorBoard"] = f"tensorboard --logdir {logger.log_dir}"
        if isinstance(logger, CSVLogger):
            csv = Path(logger.log_dir) / "metrics.csv"
            where["metrics"] = (
                str(csv) if csv.is_file() else "none: fewer batches than trainer.log_every_n_steps"
            )
    return where


def interrupted(signum: int, model: GANLitModule, saved: str | Path | None) -> Interrupted:
    """The one line a stopped run ends with: where it stopped and the command that continues it."""
    name = signal.Signals(signum).name
    if saved is None:
        return Interrupted(f"{name} at g_step {model.g_step}; no checkpoint (checkpointing is off)", signum)
    hydra = HydraConfig.get() if in_multirun() else None
    if hydra is not None and hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        how = "the sweep's last line says how to continue it"  # a search's trial: its study continues
    elif hydra is not None:  # a grid job: -m and the sweep's hydra overrides (the same launcher)
        how = f"resume with: {rerun_command(hydra, resume_overrides(), Path(saved))}"
    else:
        how = "resume with: " + shlex.join(["python", "train.py", *resume_overrides(), f"ckpt_path={saved}"])
    return Interrupted(f"{name}: stopped at g_step {model.g_step}, saved {saved}; {how}", signum)


def resume_overrides() -> list[str]:
    """This run's command-line overrides, less any ckpt_path (the resume command sets its own)."""
    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]


def last_saved(trainer: L.Trainer, checkpoint_io: SafeCheckpointIO) -> str | Path | None:
    """The newest checkpoint this fit wrote. Only rank 0 writes; the other ranks know its path from
    the checkpoint callback (and say the same thing when they stop)."""
    if checkpoint_io.last_written is not None or trainer.is_global_zero:
        return checkpoint_io.last_written
    last = [cb.last_model_path for cb in trainer.callbacks if isinstance(cb, GANCheckpoint)]
    return last[0] or None if last else None


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, str]]:
    """Fit the configured GAN; returns the final logged metrics and where the outputs went."""
    # Ctrl-C or SIGTERM before the first training step (data preparation, the metrics classifier, reference
    # statistics, which Lightning sets up inside fit) ends the run as a stop does, until GracefulInterrupt
    # takes over when training starts; caches are written whole or not at all
    setting_up = StopSignals(
        "stopped before the first training step, so nothing was trained or saved; run the same command "
        "to start again (caches finished so far are kept)"
    )
    with setting_up.active():
        check_train_config(cfg)  # before the printout, which resolves every value
        if cfg.extras.get("print_config"):
            print_config_tree(cfg)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        threads = cluster.cpu_threads()
        if threads is not None:
            torch.set_num_threads(threads)
            log.info("using %d CPU thread(s): the CPUs this job was given", threads)
        ckpt_path = resume_from(cfg)
        if ckpt_path:
            checkpoint = load_resumable(ckpt_path, cfg)
            check_resume(ckpt_path, stored_config(checkpoint), checkpoint[STEPS]["g_step"], cfg)
            # the budget in generator steps, whatever d_steps_per_g was
            if cfg.get("max_g_steps") is not None:
                cfg.trainer.max_steps = resumed_max_steps(
                    checkpoint, cfg.max_g_steps, cfg.model.d_steps_per_g
                )
            del checkpoint
        cluster.check_launcher(cfg.trainer)
        if cfg.trainer.get("max_steps", -1) == -1 and cfg.trainer.get("max_epochs", -1) in (None, -1):
            raise GanforgeError("no training budget: set max_g_steps (generator steps) or trainer.max_epochs")
        if cfg.get("metrics") and cfg.metrics.feature_network == "inception":
            ensure_inception_weights()  # fail before anything is built, not at the first evaluation

        check_logger_config(cfg.get("logger"))
        warn_slow_ema(cfg.model.get("ema_decay"), cfg.get("max_g_steps"))
        datamodule = instantiate(cfg.data)
        if rank_zero_only.rank == 0:  # before DDP starts the other ranks, which read the same data
            datamodule.prepare_data()
            datamodule.setup("fit")  # now, so that a set too small is refused before minutes of set-up
            name = getattr(datamodule, "name", "")  # image sets have one; the 2-D mixtures do not
            check_batch_fits(datamodule.batch_size, len(datamodule.data_train), name)
        if synthesize_on(cfg):
            check_synthesize(cfg, datamodule)
        model = instantiate(cfg.model)
        requeue_signal = cluster.requeue_signal()
        interrupt = GracefulInterrupt(requeue_signal)
        callbacks = [*instantiate_group(cfg.get("callbacks")), StoreConfig(cfg), interrupt]
        # best.ckpt first: a last.ckpt written after it in the same batch records it (a resumed run knows it)
        callbacks.sort(key=lambda c: not isinstance(c, BestCheckpoint))
        loggers = instantiate_group(cfg.get("logger"))
        # LearningRateMonitor refuses to run without one; with no logger there is nothing to log
        if not loggers:
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        checkpoint_io = SafeCheckpointIO()
        plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), checkpoint_io]
        if requeue_signal is not None:  # ranks from SLURM; the requeue is ganforge's (see ganforge.cluster)
            plugins.append(SLURMEnvironment(auto_requeue=False, requeue_signal=requeue_signal))
        with without_inapplicable_messages():
            trainer = instantiate(
                cfg.trainer,
                callbacks=callbacks,
                logger=loggers or False,
                strategy=gan_strategy(cfg.trainer),
                plugins=plugins,
            )
        if isinstance(trainer.accelerator, CUDAAccelerator):
            model.check_switches_on_cuda(str(trainer.precision), trainer.world_size)
            torch.set_float32_matmul_precision(cfg.get("float32_matmul_precision", "highest"))
        log_run_metadata(trainer.loggers, cfg, model, datamodule)
    try:
        with without_inapplicable_messages(), setting_up.active():
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException as err:
        last_good = last_saved(trainer, checkpoint_io) or ckpt_path
        stopped = isinstance(err, SIGTERMException)
        signum = (interrupt.signal_received(trainer) or signal.SIGTERM) if stopped else None
        # only a job that trained since it started: one stopped before its first step is not requeued forever
        requeue = (
            requeue_signal is not None
            and signum == requeue_signal
            and last_good is not None
            and interrupt.progressed(model)
        )
        finish(trainer, failed=True, preempted=requeue)  # the W&B run shows as failed, not finished
        if died(err):
            resume = f"resume with ckpt_path={last_good}" if last_good else "no checkpoint was written"
            raise GanforgeError(
                f"a data loading process died at g_step {model.g_step} ({' '.join(str(err).split())}); "
                f"if memory ran out, lower data.num_workers or data.batch_size; {resume}"
            ) from err
        if isinstance(err, TrainingDiverged):
            fallback = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was written"
            raise TrainingDiverged(f"{err}; {fallback}") from None
        if requeue:
            job_id = cluster.slurm_job_id()
            assert signum is not None and job_id is not None
            raise Requeued(
                f"{signal.Signals(signum).name}: stopped at g_step {model.g_step}, saved {last_good}; "
                f"requeueing SLURM job {job_id}, which continues from it in {cfg.paths.output_dir}",
                signum,
                job_id,
            ) from None
        if signum is not None:
            raise interrupted(signum, model, last_good) from None
        raise
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    where = report(trainer, cfg)
    for command in finish(trainer, failed=False):
        where["W&B (offline)"] = f"upload with: {command}"
    if rank_zero_only.rank == 0 and synthesize_on(cfg):
        where |= synthesize(cfg, trainer, metrics)
    return metrics, where


def main(cfg: DictConfig) -> float | None:
    """Entry point behind the root `train.py`: user mistakes end in one line and exit code 1.
    Returns `cfg.optimized_metric` (what Hydra sweepers minimise), None when it was never logged.

    In a multirun, a job that fails (an exception, diverged losses) is recorded as failed in its
    job.json and returns `failed_job_value`, so one bad trial does not end the sweep. SIGTERM or
    Ctrl-C ends the whole sweep (job.json: interrupted), with the exit code a shell expects. A SLURM
    job stopped by its requeue signal is requeued (job.json: requeued) and returns nothing: its next
    start gives the result."""
    if cfg.extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    metrics: dict[str, float] = {}
    status, error = "failed", None
    try:
        with one_line_errors():
            try:
                metrics, where = train(cfg)
            except GanforgeError as err:  # one_line_errors turns it into an exit code: keep the text
                error = f"{type(err).__name__}: {err}"
                status = "interrupted" if isinstance(err, Interrupted) else "failed"
                if isinstance(err, Requeued) and rank_zero_only.rank == 0:
                    status = "requeued"
                    write_job_record(cfg, status, metrics, error)  # SLURM ends this process once requeued
                    try:
                        cluster.requeue(err.job_id, str(cfg.paths.output_dir))
                    except GanforgeError as failed:
                        status, error = "interrupted", f"{type(failed).__name__}: {failed}"
                        raise failed from None
                raise
        status = "completed"
    except (Exception, SystemExit) as err:
        error = error or f"{type(err).__name__}: {err}"
        if not in_multirun() or status in ("interrupted", "requeued"):  # a requeued job has no result yet
            raise
        log.error("job failed, the sweep goes on: %s", error)
    finally:
        if rank_zero_only.rank == 0:
            write_job_record(cfg, status, metrics, error)
    if status != "completed":
        return cfg.failed_job_value
    if rank_zero_only.rank == 0:
        width = max(map(len, where))
        log.info(
            "Training finished. Outputs:\n%s", "\n".join(f"  {k:<{width}}  {v}" for k, v in where.items())
        )
    value = metrics.get(cfg.get("optimized_metric") or "")
    if in_multirun() and (value is None or not math.isfinite(value)):
        return cfg.failed_job_value
    return value
