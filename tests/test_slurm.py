"""On a cluster: sweeps through hydra-submitit-launcher, DDP over SLURM's ranks, and pre-emption
(USR1 -> checkpoint -> requeue -> the same final weights as an uninterrupted job), on a real one-node
SLURM (`scripts/slurm_local.sh up`); plus what needs no SLURM: the submitit local launcher, the
trainer's size read off the launcher, the requeue signal, `ckpt_path=last`, logs that continue."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from ganforge.cluster import check_launcher, cpu_threads, parse_signal
from ganforge.errors import GanforgeError
from ganforge.tracking import CSVLogger, wandb_run_id
from ganforge.train import resume_from, train
from tests import wandb_records
from tests.conftest import FAST, ROOT, SMALL_NETWORKS, compose_train
from tests.test_faults import LOADS, differences
from tests.test_sweeps import summary, sweep_dir


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


needs_slurm = pytest.mark.skipif(
    not slurm_answers(),
    reason="no SLURM answers here (sinfo); start a local one-node cluster with: scripts/slurm_local.sh up",
)

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1"]  # 2 jobs at once on 2 cores
JOB_FAST = [*FAST, *SMALL_NETWORKS["dcgan"], "metrics=none"]


def launch(tmp_path: Path, cache_dir: Path, args: list[str]) -> subprocess.Popen[str]:
    """`python train.py -m ...` as a user starts it; the launcher process waits for its jobs."""
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache_dir}"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *paths, *args]
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def queue() -> str:
    """What SLURM holds now, for failure messages: a job that waits for CPUs says why here."""
    cmd = ["squeue", "-o", "%i %j %T %M %R"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout


def finished(proc: subprocess.Popen[str], timeout: int = 400) -> str:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the launcher still waits after {timeout} s; SLURM's queue:\n{queue()}")
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def training(proc: subprocess.Popen[str], tmp_path: Path, job_num: str, timeout: int = 300) -> None:
    """Wait until sweep job `job_num` has saved a checkpoint, i.e. SLURM runs it and it trains."""
    deadline = time.monotonic() + timeout
    while not list(tmp_path.glob(f"logs/train/multiruns/*/{job_num}/checkpoints/last.ckpt")):
        if proc.poll() is not None:
            stderr = proc.communicate()[1][-3000:]
            pytest.fail(f"the launcher ended before job {job_num} saved a checkpoint:\n{stderr}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"job {job_num} saved no checkpoint in {timeout} s; SLURM's queue:\n{queue()}")
        time.sleep(0.1)


def slurm_ids(sweep: Path) -> list[str]:
    """The SLURM ids of a sweep's jobs (`<array>_<task>`, or `<job>` alone), from submitit's folders."""
    names = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    arrays = {n.split("_")[0] for n in names if "_" in n}  # an array's own folder holds its sbatch script
    return sorted(n for n in names if n not in arrays)


def sacct_states(job: str, settle_s: float = 30) -> list[str]:
    """Every state the job went through (-D: also the runs before a requeue), once accounting has
    its end: slurmdbd records a job's completion a moment after submitit has read its result."""
    cmd = ["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job]
    deadline = time.monotonic() + settle_s
    while True:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        states = [s.split()[0] for s in out.split()]
        if states and states[-1] not in {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"}:
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def job_log(sweep: Path, job: str, task: int = 0) -> str:
    folder = sweep / ".submitit" / job
    return "".join(p.read_text() for p in sorted(folder.glob(f"{job}_{task}_log.*")))


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


# Sweeps --------------------------------------------------------------------------------------------


@needs_slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_runs_one_job_per_config_and_prints_the_summary(
    tmp_path: Path, cache_dir: Path
) -> None:
    stdout = finished(launch(tmp_path, cache_dir, [*SLURM, *JOB_FAST, "logger=csv", "model=dcgan,wgan_gp"]))
    sweep = sweep_dir(tmp_path)
    rows = summary(sweep)
    assert [(r["status"], r["g_step"]) for r in rows] == [("completed", "4")] * 2
    assert [r["overrides"].split()[-1] for r in rows] == ["model=dcgan", "model=wgan_gp"]
    assert all(Path(r["run_dir"]).parent == sweep for r in rows)  # jobs resolved the launcher's sweep dir
    for job_num in ("0", "1"):
        assert (sweep / job_num / "checkpoints" / "last.ckpt").is_file()
    jobs = slurm_ids(sweep)
    assert len(jobs) == 2 and all(sacct_states(j) == ["COMPLETED"] for j in jobs)  # SLURM ran both
    assert "Sweep summary" in stdout


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_the_same_sweep_without_slurm(
    tmp_path: Path, cache_dir: Path
) -> None:
    args = ["hydra/launcher=submitit_local", *JOB_FAST, "logger=csv", "model=dcgan,wgan_gp"]
    stdout = finished(launch(tmp_path, cache_dir, args))
    rows = summary(sweep_dir(tmp_path))
    assert [(r["status"], r["g_step"]) for r in rows] == [("completed", "4")] * 2
    assert "Sweep summary" in stdout


# DDP over SLURM's ranks ----------------------------------------------------------------------------


@needs_slurm
@pytest.mark.slow
def test_a_two_task_job_trains_with_ddp_over_slurm_ranks(tmp_path: Path, cache_dir: Path) -> None:
    args = [*SLURM, *FAST, *SMALL_NETWORKS["dcgan"], "hydra.launcher.tasks_per_node=2"]
    finished(launch(tmp_path, cache_dir, args))
    sweep = sweep_dir(tmp_path)
    (job,) = slurm_ids(sweep)
    for rank in (0, 1):  # each rank is a process SLURM started (its own task log), not one Lightning spawned
        assert f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in job_log(
            sweep, job, rank
        )
    run = sweep / "0"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", **LOADS)["gan_steps"] == {"g_step": 4, "d_step": 4}
    assert "val/fid" in metrics_rows(run)[0]  # both ranks joined the metric collectives
    assert summary(sweep)[0]["status"] == "completed"


# Pre-emption -------------------------------------------------------------------------------------


@needs_slurm
@pytest.mark.slow
def test_a_preempted_job_requeues_and_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, cache_dir: Path, no_wandb_account
) -> None:
    """Two identical jobs; the second gets SLURM's USR1 mid-run, as before a time limit."""
    budget = 100
    args = [
        *SLURM, *JOB_FAST, "logger=[csv,wandb]", f"max_g_steps={budget}", "trainer.log_every_n_steps=5",
        "callbacks.model_checkpoint.last_every_n_g_steps=5", "+label=straight,preempted",
    ]  # fmt: skip
    proc = launch(tmp_path, cache_dir, args)
    training(proc, tmp_path, "1")
    sweep = sweep_dir(tmp_path)
    straight, preempted = slurm_ids(sweep)
    subprocess.run(["scancel", "--signal=USR1", preempted], check=True)
    finished(proc)

    rows = summary(sweep)
    assert [(r["status"], r["g_step"]) for r in rows] == [("completed", str(budget))] * 2
    assert sacct_states(preempted)[0] == "REQUEUED" and sacct_states(straight) == ["COMPLETED"]
    log = job_log(sweep, preempted)
    assert "SIGUSR1: stopped at g_step" in log and f"requeued SLURM job {preempted}" in log
    assert f"{sweep / '1'} already holds" in log  # the second start continued the first one's checkpoint

    a, b = (torch.load(sweep / job / "checkpoints" / "last.ckpt", **LOADS) for job in ("0", "1"))
    same = ("state_dict", "optimizer_states", "gan_steps", "rng_states", "epoch", "global_step")
    assert differences({k: a[k] for k in same}, {k: b[k] for k in same}) == []
    assert metrics_rows(sweep / "0") == metrics_rows(sweep / "1")  # no row lost or repeated

    run_id = (sweep / "1" / "wandb" / "run_id").read_text()
    pieces = sorted((sweep / "1" / "wandb").glob("offline-run-*"))  # one per start, one W&B run id
    assert len(pieces) == 2 and all(p.name.endswith(f"-{run_id}") for p in pieces)
    first, second = (next(p.glob("run-*.wandb")) for p in pieces)
    assert wandb_records.exit_code(first) == 1 and wandb_records.exit_code(second) == 0
    assert f"wandb sync {sweep / '1' / 'wandb'}/offline-run-*-{run_id}*" in log


def task_pid(job: str, rank: int) -> int:
    """The process of one task (rank) of a running SLURM job, found by its environment."""
    wanted = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode()}
    for proc in Path("/proc").iterdir():
        try:
            ours = proc.name.isdigit() and b"submitit" in (proc / "cmdline").read_bytes()
            if ours and wanted <= set((proc / "environ").read_bytes().split(b"\0")):
                return int(proc.name)
        except OSError:  # a process that ended meanwhile
            continue
    raise AssertionError(f"no process of task {rank} of SLURM job {job}")


@needs_slurm
@pytest.mark.slow
@pytest.mark.parametrize("reaches", ["every rank", "rank 1 only"])
def test_a_preempted_two_task_job_stops_on_every_rank_and_continues(
    tmp_path: Path, cache_dir: Path, reaches: str
) -> None:
    """SLURM's signal reaches the ranks at different moments; one that reaches rank 1 alone is the
    extreme case: rank 1 stopping by itself would leave rank 0 waiting in the next batch for ever."""
    budget = 60
    args = [
        *SLURM, *JOB_FAST, "logger=csv", "hydra.launcher.tasks_per_node=2", f"max_g_steps={budget}",
        "callbacks.model_checkpoint.last_every_n_g_steps=5",
    ]  # fmt: skip
    proc = launch(tmp_path, cache_dir, args)
    training(proc, tmp_path, "0")
    sweep = sweep_dir(tmp_path)
    (job,) = slurm_ids(sweep)
    if reaches == "every rank":
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
    else:
        os.kill(task_pid(job, 1), signal.SIGUSR1)
    finished(proc)

    assert [(r["status"], r["g_step"]) for r in summary(sweep)] == [("completed", str(budget))]
    assert sacct_states(job)[0] == "REQUEUED"
    assert f"requeued SLURM job {job}" in job_log(sweep, job, 0)
    for rank in (0, 1):  # both ranks of the second start resumed the one checkpoint
        assert f"{sweep / '0'} already holds" in job_log(sweep, job, rank)
    assert torch.load(sweep / "0" / "checkpoints" / "last.ckpt", **LOADS)["gan_steps"]["g_step"] == budget


# Without SLURM -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "sizes"),
    [
        ([], (1, 1)),
        (["trainer=ddp_sim"], (1, 2)),
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4"],
            (2, 4),
        ),
        (["hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=2", "trainer=ddp"], (1, 2)),
    ],
)
def test_the_trainer_size_follows_the_slurm_launcher(overrides: list[str], sizes: tuple[int, int]) -> None:
    cfg = compose_train([*overrides, "hydra.mode=MULTIRUN"])  # as a submitted job composes it
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == sizes
    check_launcher(cfg.trainer)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=2", "trainer.devices=4"],
            "trainer.devices=4 but hydra.launcher.tasks_per_node=2",
        ),
        (
            ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"],
            "hydra/launcher=submitit_local runs one task per job",
        ),
    ],
)
def test_a_trainer_set_apart_from_the_launcher_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(GanforgeError, match=message):
        check_launcher(compose_train([*overrides, "hydra.mode=MULTIRUN"]).trainer)


@pytest.mark.parametrize("name", ["submitit_slurm", "submitit_local"])
def test_a_submitit_launcher_without_multirun_is_refused(name: str) -> None:
    """Hydra launches only multiruns: without -m the job would quietly train on this machine."""
    with pytest.raises(GanforgeError, match=f"hydra/launcher={name} submits jobs only in a multirun; add -m"):
        check_launcher(compose_train([f"hydra/launcher={name}"]).trainer)


def test_the_requeue_signal_is_read_as_slurm_writes_it() -> None:
    assert parse_signal("USR1@120") == signal.SIGUSR1
    assert parse_signal("SIGUSR2@300") == signal.SIGUSR2
    assert parse_signal(f"{int(signal.SIGTERM)}@60") == signal.SIGTERM
    with pytest.raises(GanforgeError, match="drop the 'B:' prefix"):
        parse_signal("B:USR1@120")
    with pytest.raises(GanforgeError, match="names no signal"):
        parse_signal("USR9@120")


def test_the_slurm_launcher_asks_for_usr1_before_the_limit() -> None:
    compose_train(["hydra/launcher=submitit_slurm"])
    launcher = HydraConfig.get().launcher
    assert launcher.additional_parameters.signal == "USR1@120" and launcher.additional_parameters.requeue


def test_a_job_uses_as_many_threads_as_cpus_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SLURM_JOB_NAME"):
        monkeypatch.delenv(var, raising=False)
    compose_train([])
    assert cpu_threads() is None  # a plain run: torch's own choice
    compose_train(["hydra/launcher=submitit_local"])
    assert cpu_threads() == 1  # local jobs run side by side
    compose_train(["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=4"])
    assert cpu_threads() == 4
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cpu_threads() == 3  # inside the job, what SLURM granted


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_ckpt_path_last_a_run_dir_and_a_run_that_starts_again(tmp_path: Path) -> None:
    logs = tmp_path / "logs"

    def resolved(ckpt_path: str | None, run: str = "new") -> str | None:
        cfg = compose_train(
            [f"paths.log_dir={logs}", f"ckpt_path={'null' if ckpt_path is None else ckpt_path}"],
            output_dir=logs / "train" / "runs" / run,
        )
        return resume_from(cfg)

    with pytest.raises(GanforgeError, match="ckpt_path=last: no run under"):
        resolved("last")
    older = touch(logs / "train" / "runs" / "a" / "checkpoints" / "last.ckpt")
    numbered = touch(logs / "train" / "multiruns" / "s" / "0" / "checkpoints" / "g_step_0000500.ckpt")
    touch(numbered.with_name("g_step_0000100.ckpt"))
    os.utime(older, (1, 1))
    assert resolved("last") == str(numbered)  # the newest of all runs, its highest step
    assert resolved(str(older.parent.parent)) == str(older)  # a run directory: its newest checkpoint
    with pytest.raises(GanforgeError, match="is a directory without checkpoints"):
        resolved(str(tmp_path))
    assert resolved(None) is None
    own = touch(logs / "train" / "runs" / "new" / "checkpoints" / "last.ckpt")
    assert resolved(str(older)) == str(own)  # a restart continues itself, not where it first began


@pytest.mark.slow
def test_ckpt_path_last_continues_the_newest_run(make_cfg) -> None:
    first = make_cfg("metrics=none", run="logs/train/runs/first")
    train(first)
    cfg = make_cfg("metrics=none", "max_g_steps=6", "ckpt_path=last", run="logs/train/runs/second")
    out = Path(cfg.paths.output_dir)
    train(cfg)
    assert torch.load(out / "checkpoints" / "last.ckpt", **LOADS)["gan_steps"]["g_step"] == 6
    assert metrics_rows(out)[0]["g_step"] == "5.0"  # it began where the first run ended (g_step 4)


def test_the_wandb_run_id_is_the_same_at_every_start_of_a_run_dir(tmp_path: Path) -> None:
    ids = []
    for run in ("a", "a", "b"):
        compose_train([], output_dir=tmp_path / run)
        ids.append(wandb_run_id())
    assert ids[0] == ids[1] != ids[2]


def test_the_csv_log_continues_when_a_run_starts_again(tmp_path: Path) -> None:
    def start(steps: range, extra: dict[str, float]) -> None:
        logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
        for step in steps:
            logger.log_metrics({"loss": float(step), **extra}, step=step)
        logger.finalize("success")

    start(range(5), {"val/fid": 1.0})  # logged 0..4, then stopped; the checkpoint was at step 3
    start(range(3, 7), {})
    rows = metrics_rows(tmp_path)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert [r["val/fid"] for r in rows] == ["1.0"] * 3 + [""] * 4  # earlier columns kept, rows 3-4 replaced
