"""Multiruns as users run them: separate runs and W&B runs per job, a summary, and an Optuna search
that survives a failing trial."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from ganforge.sweep import print_summary
from tests import wandb_records
from tests.conftest import FAST, SMALL_NETWORKS

SWEEP_FAST = [*FAST, *SMALL_NETWORKS["dcgan"], "max_g_steps=2", "callbacks.sample_quality.every_n_g_steps=2"]


def sweep_dir(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    return path


def summary(path: Path) -> list[dict[str, str]]:
    with (path / "summary.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_grid_multirun_separate_runs_and_wandb_runs(tmp_path: Path, run_script, no_wandb_account) -> None:
    result = run_script(
        ["hydra.mode=MULTIRUN", *SWEEP_FAST, "logger=wandb", "model.optimizer_g.lr=0.0001,0.0002"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    root = sweep_dir(tmp_path)
    jobs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    runs = [next(job.glob("wandb/offline-run-*/run-*.wandb")) for job in jobs]
    assert len({p.parent.name for p in runs}) == 2  # two W&B runs, not one swallowing the sweep
    for job, run in zip(jobs, runs, strict=True):
        (record,) = [r.run for r in wandb_records.records(run) if r.WhichOneof("record_type") == "run"][:1]
        assert record.run_group == root.name and record.display_name.startswith(f"{job.name}_")
        assert wandb_records.exit_code(run) == 0
    rows = summary(root)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert [r["overrides"].split()[-1] for r in rows] == [
        "model.optimizer_g.lr=0.0001",
        "model.optimizer_g.lr=0.0002",
    ]
    assert all(float(r["value"]) > 0 and r["g_step"] == "2" for r in rows)
    assert "Sweep summary" in result.stdout


@pytest.mark.slow
def test_a_grid_sweep_runs_past_a_failed_job_then_exits_non_zero(tmp_path: Path, run_script) -> None:
    fast = [o for o in SWEEP_FAST if not o.startswith("data.batch_size=")]
    result = run_script(["hydra.mode=MULTIRUN", *fast, "data.batch_size=4096,16"])  # 4096 > 1,437 digits
    assert result.returncode == 1
    rows = summary(sweep_dir(tmp_path))
    assert [r["status"] for r in rows] == ["failed", "completed"]  # the job after the failure ran
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 1 of 2 jobs failed, the first with GanforgeError: data.batch_size=4096")
    assert line.endswith(f"each job's error is in {sweep_dir(tmp_path) / 'summary.csv'}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (  # jobs that differ only in the learning rate would continue each other's checkpoints
            ['hydra.sweep.subdir="seed=${seed}"', "model.optimizer_g.lr=0.0001,0.0002"],
            "error: this sweep varies model.optimizer_g.lr (model.optimizer_g.lr=0.0001,0.0002), but "
            "hydra.sweep.subdir=seed=${seed} does not name it, so its jobs would share run directories; add "
            "it (hydra.sweep.subdir='seed=${seed},lr=${model.optimizer_g.lr}')",
        ),
        (  # a path with a comma, unquoted: a sweep over two paths the experiment's subdir does not name
            ["experiment=long_tail_mnist", "data.data_dir=/data/MNIST copy,v2"],
            "error: this sweep varies data.data_dir (data.data_dir=/data/MNIST copy,v2), but",
        ),
    ],
)
def test_a_sweep_whose_jobs_would_share_run_directories_is_refused_before_any_runs(
    tmp_path: Path, run_script, args: list[str], message: str
) -> None:
    result = run_script(["hydra.mode=MULTIRUN", *SWEEP_FAST, *args])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-2000:]
    assert "quote a value whose comma is part of it" in errors[0]
    assert not (tmp_path / "logs" / "train" / "multiruns").exists()  # nothing ran, nothing written


OPTUNA_SWEEP = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
hydra:
  mode: MULTIRUN
  sweeper:
    direction: minimize
    n_trials: 3
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 0
      n_startup_trials: 3  # all 3 trials random: 4096, 16, 4096 (failing and completing trials)
    params:
      data.batch_size: choice(16, 4096)
"""


@pytest.mark.slow
def test_optuna_search_survives_a_failing_trial(tmp_path: Path, run_script, no_wandb_account) -> None:
    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "random3.yaml").write_text(OPTUNA_SWEEP)  # batch 4096 > 1,437 digits: that trial raises
    fast = [o for o in SWEEP_FAST if not o.startswith("data.batch_size=")]  # the search sets it
    search = ["hparams_search=random3", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "logger=wandb"]
    result = run_script([*fast, *search])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(sweep_dir(tmp_path))
    assert len(rows) == 3
    batch = {r["job"]: re.search(r"data\.batch_size=(\d+)", r["overrides"]).group(0) for r in rows}
    failed = [r for r in rows if batch[r["job"]] == "data.batch_size=4096"]
    completed = [r for r in rows if batch[r["job"]] == "data.batch_size=16"]
    assert failed and completed  # the seed makes the search draw both
    assert all(r["status"] == "failed" and "is larger than the" in r["error"] for r in failed)
    assert all(r["status"] == "completed" and float(r["value"]) < 1e6 for r in completed)
    for r in completed:  # each job its own W&B run, closed with the job's outcome
        run = next(Path(r["run_dir"]).glob("wandb/offline-run-*/run-*.wandb"))
        assert wandb_records.exit_code(run) == 0
    for r in failed:  # refused before anything was built, loggers included: no W&B run to close
        assert not list(Path(r["run_dir"]).glob("wandb/offline-run-*"))
    best = yaml.safe_load((sweep_dir(tmp_path) / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(float(r["value"]) for r in completed))  # 1e6 never wins


def test_shipped_optuna_search_composes(make_cfg) -> None:
    cfg = make_cfg("hparams_search=optuna")
    assert cfg.optimized_metric == "val/fid_best" and cfg.failed_job_value > 1e3


class NaNLoss:
    name = "nan"

    def d_loss(self, real, fake):
        return (real.mean() + fake.mean()) * float("nan")

    def g_loss(self, fake):
        return fake.mean()

    def score(self, out):
        return out


def test_diverged_losses_stop_the_run(make_cfg) -> None:
    from ganforge.errors import TrainingDiverged
    from ganforge.train import train

    cfg = make_cfg("model.loss._target_=tests.test_sweeps.NaNLoss")
    with pytest.raises(TrainingDiverged, match=r"at g_step 0: the discriminator loss is nan; no checkpoint"):
        train(cfg)


def test_the_printed_summary_shows_what_the_jobs_differ_in_unbroken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = "experiment=scarcity_mnist paths.log_dir=/a/rather/long/path/to/the/logs logger=csv"
    records = [
        {
            "job": job, "status": "completed", "metric": "val/fid_best", "value": 10.0 + job, "g_step": 1000,
            "overrides": f"{common} data.train_per_class={size} seed=0",
            "run_dir": f"/a/rather/long/path/to/the/logs/multiruns/sweep/per_class={size},seed=0",
        }
        for job, size in enumerate((5, 60))
    ]  # fmt: skip
    print_summary(records, tmp_path / "summary.csv")
    out = capsys.readouterr().out
    assert "data.train_per_class=5" in out and "data.train_per_class=60" in out  # what the jobs differ in
    assert "paths.log_dir" not in out and "/a/rather/long/path/to/the/logs/multiruns" not in out
