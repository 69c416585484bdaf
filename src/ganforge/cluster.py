"""Training on a SLURM cluster through hydra-submitit-launcher.

- The trainer's size follows the launcher: `trainer.num_nodes` = `hydra.launcher.nodes` and
  `trainer.devices` = `hydra.launcher.tasks_per_node` (one task per device, ranks from SLURM).
- Pre-emption and time limits: SLURM sends the requeue signal (`hydra.launcher.additional_parameters.
  signal`, USR1 by default) before it kills the job. Training stops after the batch in progress, writes
  `last.ckpt`, and the job requeues itself; the requeued job runs in the same run directory, finds that
  checkpoint there and continues (ganforge.checkpoint_layout.find_checkpoint).

Lightning's own SLURM requeue is switched off: it saves from inside the signal handler, which can fall
between the discriminator and the generator update, and such a checkpoint does not resume exactly.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from ganforge.errors import GanforgeError

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
