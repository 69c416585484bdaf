"""Sweeps that stop early, as users stop them: an Optuna study killed (SIGTERM, kill -9) and run again,
a search space its stored study cannot take, a SLURM job cancelled under its launcher."""

from __future__ import annotations

import shlex
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from tests.conftest import SMALL_NETWORKS
from tests.test_slurm import JOB_FAST, SLURM, launch, needs_slurm, slurm_ids, training
from tests.test_sweeps import summary, sweep_dir

TINY = [
    "model=mlp", *SMALL_NETWORKS["mlp"], "data.image_size=16", "trainer.accelerator=cpu", "metrics=none",
    "logger=csv", "extras.print_config=false", "trainer.enable_model_summary=false",
]  # fmt: skip


def study_args(db: Path, n_trials: int) -> list[str]:
    """The shipped search, kept in `db`: TPE seed 0, all trials random (its 5 start-up trials)."""
    return [
        "hparams_search=optuna", f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=t",
        f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.sampler.seed=0",
    ]  # fmt: skip


def search(folder: Path, cache_dir: Path, args: list[str]) -> subprocess.Popen[str]:
    """`python train.py -m ...` in its own folder (logs/ in it), as tests.test_slurm.launch starts it."""
    folder.mkdir()
    return launch(folder, cache_dir, args)


def ended(proc: subprocess.Popen[str], timeout: int = 300) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep still runs after {timeout} s")
    return proc.returncode, stdout, stderr


@pytest.mark.slow
def test_an_optuna_study_stopped_by_signals_continues_where_it_stopped(
    tmp_path: Path, cache_dir: Path
) -> None:
    db = tmp_path / "optuna.db"
    quick = [*TINY, "max_g_steps=2"]
    long = [*TINY, "max_g_steps=2000", "callbacks.model_checkpoint.last_every_n_g_steps=5"]

    code, _, stderr = ended(search(tmp_path / "a", cache_dir, [*study_args(db, 2), *quick]))
    assert code == 0, stderr[-3000:]
    killed = search(tmp_path / "b", cache_dir, [*study_args(db, 3), *long])  # trial 2
    training(killed, tmp_path / "b", "0")
    killed.send_signal(signal.SIGKILL)
    ended(killed)
    stopped = search(tmp_path / "c", cache_dir, [*study_args(db, 3), *long])  # trial 3
    training(stopped, tmp_path / "c", "0")
    stopped.send_signal(signal.SIGTERM)
    code, stdout, stderr = ended(stopped)

    assert code == 143, stderr[-3000:]
    assert (
        "Optuna study 't': marked FAILED its trial(s) 2, left RUNNING by a sweep that no longer runs"
        in stdout
    )
    assert "2 of its hydra.sweeper.n_trials=3 trials finished before, 1 to run" in stdout
    assert "Optuna study 't': stopped, trial(s) 3 marked FAILED" in stdout
    assert [r["status"] for r in summary(sweep_dir(tmp_path / "c"))] == ["interrupted"]

    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] * 2
    first = [t.params for t in trials[:2]]
    assert all(t.params not in first for t in trials[2:])  # the seeded sampler did not start over


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # add_trial, enqueue_trial
@pytest.mark.parametrize("stored", ["other choices", "a queued value outside them"])
def test_a_search_space_the_stored_study_cannot_take_is_one_line(
    tmp_path: Path, run_cli, stored: str
) -> None:
    """Optuna crashes mid-sweep on both, with a traceback: a parameter whose choices changed since the
    study began, a queued trial (study.enqueue_trial) with a value outside them."""
    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{db}")
    if stored == "other choices":  # the shipped search has data.batch_size: choice(32, 64, 128)
        space = {"data.batch_size": CategoricalDistribution((16, 32))}
        study.add_trial(
            optuna.trial.create_trial(params={"data.batch_size": 16}, distributions=space, value=1)
        )
        message = (
            f"error: Optuna study 't' in sqlite:///{db} searched data.batch_size over choice(16, 32), this "
            "search space over choice(32, 64, 128), and a study cannot change a parameter's choices or kind: "
            "search data.batch_size over choice(16, 32), or start a new study with hydra.sweeper.study_name="
        )
    else:
        study.enqueue_trial({"data.batch_size": 256})
        message = (
            "error: queued trial 0 of Optuna study 't' sets data.batch_size=256, outside "
            "choice(32, 64, 128); it is marked FAILED and the next run goes on without it"
        )
    result = run_cli([*study_args(db, 2), *TINY, "max_g_steps=2"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(message)
    assert not list(tmp_path.glob("logs/train/multiruns/*/*/job.json"))  # nothing ran
    (trial,) = optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials
    assert trial.state == (TrialState.COMPLETE if stored == "other choices" else TrialState.FAIL)


@needs_slurm
@pytest.mark.slow
def test_a_cancelled_slurm_job_ends_its_launcher_in_one_line(tmp_path: Path, cache_dir: Path) -> None:
    args = [*SLURM, *JOB_FAST, "logger=csv", "callbacks.model_checkpoint.last_every_n_g_steps=5"]
    args.append("max_g_steps=4,2000")  # job 1 trains long enough to be cancelled
    proc = launch(tmp_path, cache_dir, args)
    training(proc, tmp_path, "1")
    sweep = sweep_dir(tmp_path)
    _, cancelled = slurm_ids(sweep)
    subprocess.run(["scancel", cancelled], check=True)
    code, _, stderr = ended(proc)

    assert code == 143 and "Traceback" not in stderr, stderr[-3000:]
    saved = sweep / "1" / "checkpoints" / "last.ckpt"
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: SIGTERM: stopped sweep job 1 (SLURM job {cancelled}, saved {saved}); ")
    assert f"; summary: {sweep / 'summary.csv'}; resume with: " in line
    command = shlex.split(line.split("resume with: ")[1])
    assert command[:5] == ["python", "train.py", "-m", *SLURM]
    given = {a.split("=")[0] for a in [*args, "paths.log_dir", "paths.cache_dir"]}
    assert given == {a.split("=")[0] for a in command[3:-1]}  # every override the user gave
    assert "max_g_steps=2000" in command and command[-1] == f"ckpt_path={saved}" and saved.is_file()
    assert [r["status"] for r in summary(sweep)] == ["completed", "interrupted"]
