"""An Optuna search that continues its study: the same `python train.py -m hparams_search=optuna
hydra.sweeper.storage=sqlite:///logs/optuna.db` run again after an interruption goes on where it stopped.

hydra-optuna-sweeper 1.2 opens a stored study as it finds it and starts its seeded sampler afresh, so a
second run asks the parameters of the first run's trials again; the trials a stopped sweep was running
stay RUNNING for ever. Here, before the first trial of a run:
- the study's trials left RUNNING by a sweep that no longer runs (killed) are marked FAILED;
- `hydra.sweeper.n_trials` counts the study's finished trials (COMPLETE or PRUNED): only the rest run;
- the sampler's seed is offset by the number of trials in the study, so it draws new parameters, and
  still the same ones for the same study;
- what Optuna would crash on mid-sweep is one error line before anything runs: a parameter whose
  choices or kind differ from those the study searched, a queued trial (`study.enqueue_trial`) with a
  value the search space does not have.
When the sweep stops (a job interrupted, a SLURM job cancelled), the trials it was running are told
(those that ended with their value, the others FAILED) and summary.csv is written.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from optuna.distributions import BaseDistribution, CategoricalDistribution, check_distribution_compatibility
from optuna.trial import FrozenTrial, Trial, TrialState

from ganforge.errors import GanforgeError, one_line_errors
from ganforge.sweep import collect, how_to_continue, write_summary

log = logging.getLogger(__name__)

SWEEP = "ganforge_sweep"  # a trial's system attribute: "<host>:<pid>" of the sweep that runs it
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def this_sweep() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def abandoned(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose sweep no longer runs: one this machine's sweep asked and then died, or one
    whose sweep did not say who it was (hydra-optuna-sweeper's own). A sweep on another machine may
    still run its trials: those are left alone."""
    sweep = trial.system_attrs.get(SWEEP)
    if sweep is None:
        return True
    host, _, pid = sweep.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def show(distribution: BaseDistribution) -> str:
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    return repr(distribution)


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether a queued value is one the distribution can take, as Optuna's Trial._is_fixed_param
    decides (which crashes on a value outside a categorical's choices, and samples instead of one
    outside a range)."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def check_search_space(study: optuna.Study, space: dict[str, BaseDistribution], storage: str) -> None:
    """Optuna refuses a parameter whose choices or kind (categorical, float, log, int) differ from those
    the study's trials were given; it does so at the first trial, with a traceback."""
    for trial in study.get_trials(deepcopy=False):
        for name, before in trial.distributions.items():
            try:
                check_distribution_compatibility(before, space.get(name, before))
            except ValueError:
                raise GanforgeError(
                    f"Optuna study {study.study_name!r} in {storage} searched {name} over {show(before)}, "
                    f"this search space over {show(space[name])}, and a study cannot change a parameter's "
                    f"choices or kind: search {name} over {show(before)}, or start a new study with "
                    "hydra.sweeper.study_name=<new name>"
                ) from None


def refuse_queued(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
    """A queued trial with a value the search space does not have can never run in this study (its
    choices cannot change): it is marked FAILED, so that the next run goes on without it."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        for name, value in trial.system_attrs.get("fixed_params", {}).items():
            if name in space and contains(space[name], value):
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            where = (
                f"outside {show(space[name])}" if name in space else "a parameter the search does not have"
            )
            raise GanforgeError(
                f"queued trial {trial.number} of Optuna study {study.study_name!r} sets {name}={value!r}, "
                f"{where}; it is marked FAILED and the next run goes on without it: queue values from "
                "the search space (other values need a new study: hydra.sweeper.study_name=<new name>)"
            )


class ContinuingOptunaSweeper(OptunaSweeperImpl):
    """hydra-optuna-sweeper's sweeper, continuing its stored study (see the module's docstring)."""

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        self.total = self.n_trials
        self.batch: Sequence[Trial] = []  # the trials being run, and the job number of the first
        self.batch_job = 0

    def sweep(self, arguments: list[str]) -> None:
        with one_line_errors():
            self.continue_study(arguments)
        try:
            super().sweep(arguments)
        except BaseException:
            self.tell_stopped()
            raise

    def continue_study(self, arguments: list[str]) -> None:
        """Before the plugin opens the study: what it has, what is left to run, and a sampler that
        does not draw again what it drew."""
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        space = {name: d for name, d in space.items() if name not in fixed}
        storage = self.storage or "memory"
        study = self.stored_study()
        if study is not None:
            check_search_space(study, space, storage)
            refuse_queued(study, space)
            left = [t.number for t in study.get_trials(states=(TrialState.RUNNING,)) if abandoned(t)]
            for number in left:
                study.tell(number, state=TrialState.FAIL)
            if left:
                log.warning(
                    "Optuna study %r: marked FAILED its trial(s) %s, left RUNNING by a sweep that no "
                    "longer runs", self.study_name, ", ".join(map(str, left)),
                )  # fmt: skip
        trials = study.get_trials(deepcopy=False) if study is not None else []
        done = sum(t.state in FINISHED for t in trials)
        self.n_trials = max(self.total - done, 0)
        sampler = self.config.hydra.sweeper.sampler
        reseeded = ""
        if trials and sampler.get("seed") is not None:
            self.sampler = instantiate(sampler, seed=sampler.seed + len(trials))
            reseeded = f"; sampler seed {sampler.seed} + {len(trials)} trials in the study"
        to_run = f"{self.n_trials} to run" if self.n_trials else "none to run (raise hydra.sweeper.n_trials)"
        log.info(
            "Optuna study %r in %s: %d of its hydra.sweeper.n_trials=%d trials finished before, %s%s",
            self.study_name, storage, done, self.total, to_run, reseeded,
        )  # fmt: skip
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)  # results go there, also when none run

    def stored_study(self) -> optuna.Study | None:
        """The study this sweep continues; None when there is none yet (the plugin creates it)."""
        if self.storage is None or self.study_name is None:
            return None
        try:
            return optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            return None

    def _configure_trials(self, trials: list[Trial], *args: Any) -> Any:
        self.batch, self.batch_job = trials, self.job_idx
        for trial in trials:
            trial.set_system_attr(SWEEP, this_sweep())
        return super()._configure_trials(trials, *args)

    def tell_stopped(self) -> None:
        """The sweep stopped with trials RUNNING: those whose job ended get its result (the plugin
        tells them only once every job of the batch has ended), the others FAILED."""
        sweep_dir = Path(self.sweep_dir)
        records = {r["job"]: r for r in collect(sweep_dir)}
        running = (
            {t.number for t in self.batch[0].study.get_trials(states=(TrialState.RUNNING,))}
            if self.batch
            else set()
        )
        stopped = []
        for job, trial in enumerate(self.batch, self.batch_job):
            if trial.number not in running:  # told by the plugin
                continue
            record = records.get(job, {})
            if record.get("status") not in ("completed", "failed"):
                trial.study.tell(trial, state=TrialState.FAIL)
                stopped.append(str(trial.number))
            elif record["status"] == "completed" and record["value"] is not None:
                trial.study.tell(trial, record["value"])
            else:  # what train.main returns for it
                trial.study.tell(trial, self.config.failed_job_value)
        if not sweep_dir.is_dir():
            return
        summary, _ = write_summary(sweep_dir)
        after = (
            how_to_continue(self.config, [])
            if self.storage is not None
            else "the study was kept in memory (hydra.sweeper.storage=null) and ends here"
        )
        log.warning(
            "Optuna study %r: stopped, trial(s) %s marked FAILED; summary: %s; %s",
            self.study_name, ", ".join(stopped) or "none", summary, after,
        )  # fmt: skip
