"""Hydra callback: one run at a time in a run directory. Two runs given one `hydra.run.dir` would
otherwise write every step twice into one metrics.csv and overwrite each other's checkpoints,
job.json and `.hydra/` files, all without a word.

The run holds an exclusive `flock` on `<run dir>/.lock` from before Hydra writes anything there until
the process ends: the kernel releases it however the process ends (kill -9 included), so a run
started again in its directory (a requeued SLURM job, a restart after a crash) takes it over, while
one started beside a live holder is refused in one line that names it. Only rank 0 of a job holds it:
its other ranks share the directory by design.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

LOCK_FILE = ".lock"


class RunLock(Callback):
    def __init__(self) -> None:
        self.held: tuple[Path, int] | None = None  # (run directory, the lock file's descriptor)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.hold(Path(config.hydra.run.dir))  # before Hydra makes the directory and writes in it

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # each job of a sweep in its own directory
            self.hold(Path(config.hydra.runtime.output_dir))

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the next job of a local sweep is this process
            self.release()

    def hold(self, run_dir: Path) -> None:
        """Take `run_dir`'s lock, or exit with `error: ...` naming the run that holds it."""
        if rank_zero_only.rank != 0 or (self.held and self.held[0] == run_dir):
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            print(
                f"error: {run_dir} is the run directory of a run still in progress ({holder}); wait for it "
                "to end, or give this run its own hydra.run.dir",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1) from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        command = shlex.join(["python", *sys.argv])
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}: {command}\n".encode(), 0
        )
        self.held = (run_dir, fd)

    def release(self) -> None:
        if self.held is not None:
            os.close(self.held[1])  # closing the descriptor releases the lock
            self.held = None
