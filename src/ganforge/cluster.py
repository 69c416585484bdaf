"""Training on a SLURM cluster through hydra-submitit-launcher.

- The trainer's size follows the launcher: `trainer.num_nodes` = `hydra.launcher.nodes` and
  `trainer.devices` = `hydra.launcher.tasks_per_node` (one task per device, ranks from SLURM).
- Pre-emption and time limits: SLURM sends the requeue signal (`hydra.launcher.additional_parameters.
  signal`, USR1 by default) before it kills the job. Training stops after the batch in progress, writes
  `last.ckpt`, and the job requeues itself; the requeued job runs in the same run directory, finds that
  checkpoint there and continues (ganforge.checkpoint_layout.find_checkpoint).
- A job stopped otherwise (`scancel`, SIGTERM, Ctrl-C) saves and ends the sweep, as in a local multirun:
  the launcher waits for the other jobs, writes summary.csv and ends in one line that names the stopped
  jobs, their checkpoints and the command that continues them.

Lightning's own SLURM requeue is switched off: it saves from inside the signal handler, which can fall
between the discriminator and the generator update, and such a checkpoint does not resume exactly.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from ganforge.checkpoint_layout import find_checkpoint
from ganforge.errors import GanforgeError, Interrupted, Requeued
from ganforge.sweep import how_to_continue, write_summary

log = logging.getLogger(__name__)

SUBMITIT_SLURM = "hydra_plugins.ganforge.launchers.SlurmLauncher"
SUBMITIT_LOCAL = "hydra_plugins.ganforge.launchers.LocalLauncher"
DEFAULT_REQUEUE_SIGNAL = signal.SIGUSR1


def launcher() -> DictConfig | None:
    """The Hydra launcher config of this job, None outside Hydra."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().get("launcher")


def slurm_launcher() -> DictConfig | None:
    """The launcher config when this job was submitted with hydra/launcher=submitit_slurm."""
    node = launcher()
    return node if node is not None and node.get("_target_") == SUBMITIT_SLURM else None


def launcher_size(key: str, default: Any) -> Any:
    """`${launcher_size:nodes,1}`: the SLURM launcher's `nodes` / `tasks_per_node`, else `default`."""
    node = slurm_launcher()
    value = node.get(key) if node is not None else None
    return default if value is None else value


def check_launcher(trainer: DictConfig) -> None:
    """Refuse a submitit launcher where it would not do what it says: in a single run (Hydra only
    launches multiruns, so the job would quietly train here), and on SLURM a trainer set apart from
    the launcher (every device is one task; otherwise Lightning's rank set-up hangs or fails)."""
    local = launcher()
    submitit = local is not None and local.get("_target_") in (SUBMITIT_SLURM, SUBMITIT_LOCAL)
    if submitit and HydraConfig.get().mode != RunMode.MULTIRUN:
        name = "submitit_slurm" if local.get("_target_") == SUBMITIT_SLURM else "submitit_local"
        raise GanforgeError(
            f"hydra/launcher={name} submits jobs only in a multirun; add -m: python train.py -m "
            f"hydra/launcher={name} ..."
        )
    node = slurm_launcher()
    if node is not None:
        for ours, theirs in (("num_nodes", "nodes"), ("devices", "tasks_per_node")):
            wanted = node.get(theirs) or 1
            if str(trainer.get(ours)) != str(wanted):
                raise GanforgeError(
                    f"trainer.{ours}={trainer.get(ours)} but hydra.launcher.{theirs}={wanted}: on SLURM "
                    f"each device is one task; set hydra.launcher.{theirs} only (trainer.{ours} follows it)"
                )
    if local is not None and local.get("_target_") == SUBMITIT_LOCAL and (local.tasks_per_node or 1) > 1:
        raise GanforgeError(
            "hydra/launcher=submitit_local runs one task per job; for several local devices set "
            "trainer.devices=N (Lightning starts the processes) and keep hydra.launcher.tasks_per_node=1"
        )


def cpu_threads() -> int | None:
    """The CPUs this job was given: SLURM's `--cpus-per-task` in a SLURM job, else the submitit
    launcher's `cpus_per_task`; None when nothing says (torch then uses every core it sees).

    Jobs that share a machine each start one compute thread per core unless told otherwise; with two
    jobs on two cores that oversubscription made a 2-job sweep 3x slower than with one thread each
    (BENCHMARKS.md)."""
    if slurm_job_id() is not None and os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    node = launcher()
    if node is not None and node.get("_target_") in (SUBMITIT_SLURM, SUBMITIT_LOCAL):
        return node.get("cpus_per_task")
    return None


def slurm_job_id() -> str | None:
    """This batch job's id as `scontrol` names it (`<array job>_<task>` for array jobs), None when
    not in a SLURM job that Lightning would treat as one (an interactive `srun bash` is not)."""
    # SLURMEnvironment.detect()'s test, without its "srun is available but not used" warning
    if "SLURM_NTASKS" not in os.environ or SLURMEnvironment.job_name() in ("bash", "interactive"):
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array is not None:
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def parse_signal(spec: str) -> signal.Signals:
    """SLURM's `--signal` value (`USR1@120`, `SIGUSR2@300`, `10@60`) to the signal it sends."""
    name = str(spec).split("@", 1)[0].strip()
    if name.upper().startswith("B:"):
        raise GanforgeError(
            f"hydra.launcher.additional_parameters.signal={spec} sends the signal to the batch shell only, "
            "which never reaches training; drop the 'B:' prefix"
        )
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"]
    except (KeyError, ValueError):
        raise GanforgeError(
            f"hydra.launcher.additional_parameters.signal={spec} names no signal; use e.g. USR1@120"
        ) from None


def requeue_signal() -> signal.Signals | None:
    """The signal that asks this job to checkpoint and requeue, None outside a SLURM batch job."""
    if slurm_job_id() is None:
        return None
    node = slurm_launcher()
    spec = (node.get("additional_parameters") or {}).get("signal") if node is not None else None
    return DEFAULT_REQUEUE_SIGNAL if spec is None else parse_signal(spec)


def requeue(job_id: str, run_dir: str) -> None:
    """Put this job back in the queue; SLURM ends the running one and starts it again, with the
    same command (and so the same run directory)."""
    if not re.fullmatch(r"[0-9_]+", job_id):
        raise GanforgeError(f"cannot requeue SLURM job {job_id!r}: not a job id")
    try:
        command = ["scontrol", "requeue", job_id]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        raise GanforgeError(
            f"scontrol requeue {job_id} failed ({str(detail).strip()}); the checkpoint is saved: submit "
            f"the same overrides with ckpt_path={run_dir} to continue"
        ) from None
    log.info("requeued SLURM job %s", job_id)


def stopped_job(stop: SystemExit, overrides: Sequence[str]) -> JobReturn:
    """What a submitit job whose training was stopped (`scancel`, SIGTERM, Ctrl-C) returns to the
    launcher: a failed job holding the exit, and its id. submitit keeps a result only when the function
    returns; a job that exits leaves the launcher with submitit's UncompletedJobError, a traceback that
    ends it before it has waited for the other jobs. A job stopped to be requeued has no result yet: it
    exits, and its next start gives the result."""
    import submitit

    if isinstance(stop.__context__, Requeued):  # one_line_errors exits while handling the error
        raise stop
    return JobReturn(
        overrides=list(overrides),
        hydra_cfg=OmegaConf.create({"hydra": {"job": {"id": submitit.JobEnvironment().job_id}}}),
        status=JobStatus.FAILED,
        _return_value=stop,
    )


def exit_of(job: JobReturn) -> SystemExit | None:
    """The exit a stopped job returned (stopped_job); None for any other result. Read from the field:
    the `return_value` of a failed job prints Hydra's "Error executing job" and raises."""
    stop = job._return_value if job.status is JobStatus.FAILED else None
    return stop if isinstance(stop, SystemExit) else None


def launched(
    launch: Callable[[], Sequence[JobReturn]], config: DictConfig, first_job: int
) -> Sequence[JobReturn]:
    """The submitit launcher's `launch`, ended in one line when one of its jobs did not finish: the jobs
    whose training was stopped, once every job has ended; or the first job that ended without a result
    (killed, out of memory, cancelled before it started), while the others go on. summary.csv holds
    the jobs that ended."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    sweep_dir = Path(config.hydra.sweep.dir)
    try:
        returns = launch()
    except FailedJobError:  # raised outside training: a bug, whose traceback is the report
        raise
    except UncompletedJobError as err:
        summary, _ = write_summary(sweep_dir)
        what = " ".join(str(err).splitlines()[:2])
        raise GanforgeError(
            f"{what}; the sweep's other jobs go on without this launcher, each writes its job.json; "
            f"summary of the jobs that ended: {summary}"
        ) from None
    stopped = [(num, job, stop) for num, job in enumerate(returns, first_job) if (stop := exit_of(job))]
    if not stopped:
        return returns
    summary, records = write_summary(sweep_dir)
    run_dirs = {r["job"]: r["run_dir"] for r in records}
    kind = "SLURM job" if config.hydra.launcher.get("_target_") == SUBMITIT_SLURM else "submitit job"
    jobs, resume = [], []
    for num, job, _ in stopped:
        ckpt = find_checkpoint(run_dirs[num]) if num in run_dirs else None
        saved = f"saved {ckpt}" if ckpt else "no checkpoint"
        jobs.append(f"sweep job {num} ({kind} {job.hydra_cfg.hydra.job.id}, {saved})")
        resume.append((job.overrides, ckpt))
    message = f"stopped {', '.join(jobs)}; summary: {summary}; {how_to_continue(config, resume)}"
    code = stopped[0][2].code
    if isinstance(code, int) and code > 128:  # 128 + the signal, as training exits (ganforge.errors)
        raise Interrupted(f"{signal.Signals(code - 128).name}: {message}", code - 128)
    raise GanforgeError(message)
