"""hydra-submitit-launcher's launchers, made ready for ganforge's configs in the job's own process.

A submitit job unpickles the sweep and resolves its run directory (`${pid:}` in `hydra.sweep.dir`)
before any task code runs, so ganforge's resolvers must be registered first: here, in the job.
Hydra imports every module of hydra_plugins when it starts, so ganforge itself is imported only
in the job.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as PluginLocalLauncher
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as PluginSlurmLauncher


def _prepare_job() -> None:
    from ganforge.config import prepare_hydra

    prepare_hydra()


class SlurmLauncher(PluginSlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _prepare_job()
        return super().__call__(*args, **kwargs)


class LocalLauncher(PluginLocalLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _prepare_job()
        return super().__call__(*args, **kwargs)
