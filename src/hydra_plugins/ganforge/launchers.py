"""hydra-submitit-launcher's launchers, made ready for ganforge's jobs.

- In the job's own process: a submitit job unpickles the sweep and resolves its run directory
  (`${pid:}` in `hydra.sweep.dir`) before any task code runs, so ganforge's resolvers must be
  registered first: here, in the job. A job whose training was stopped returns that as its result.
- In the launcher's process: a sweep whose jobs were stopped (`scancel`) ends in one line, with
  summary.csv and the command that continues it (ganforge.cluster.launched), not in a traceback.
- submitit's local controller creates its folder template as it is (`.submitit/%j`, `%j` unreplaced)
  beside each job's real folder: the local launcher removes that empty folder once its jobs are done.

Hydra imports every module of hydra_plugins when it starts, so ganforge itself is imported only
where it is used.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as PluginLocalLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher


class GanforgeJobs:
    """Both halves of the plugin's launcher: `__call__` runs in the job, `launch` in the launcher."""

    def __call__(self, sweep_overrides: list[str], *args: Any) -> Any:
        from ganforge.cluster import stopped_job
        from ganforge.config import prepare_hydra

        prepare_hydra()
        try:
            return super().__call__(sweep_overrides, *args)
        except SystemExit as stop:
            return stopped_job(stop, sweep_overrides)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ganforge.cluster import launched
        from ganforge.errors import one_line_errors

        with one_line_errors():
            launch = functools.partial(super().launch, job_overrides, initial_job_idx)
            return launched(launch, self.config, initial_job_idx)


class SlurmLauncher(GanforgeJobs, PluginSlurmLauncher):
    pass


class LocalLauncher(GanforgeJobs, PluginLocalLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            template = Path(self.params["submitit_folder"])
            if "%" in str(template):
                with contextlib.suppress(OSError):  # never made, or not empty: not the controller's
                    template.rmdir()
