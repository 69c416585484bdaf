"""Faults and hostile input: a checkpoint from a stranger, SIGTERM and Ctrl-C, a diverging run, an
interrupted resume, a full disk, a damaged cache, an unwritable log folder, a decompression bomb."""

from __future__ import annotations

import csv
import errno
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image
from torch.utils.data import TensorDataset

from ganforge.atomic import atomic_save
from ganforge.cache import fingerprint
from ganforge.checkpoint import untrusted_target
from ganforge.checkpoint_io import SafeCheckpointIO
from ganforge.datamodules.image_folder import ImageFolderDataModule
from ganforge.errors import GanforgeError, TrainingDiverged
from ganforge.train import train
from tests.conftest import FAST, ROOT, SMALL_NETWORKS, add_callback, compose_train, write_shapes

LOADS = {"map_location": "cpu", "weights_only": True}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# 1. A checkpoint's stored config cannot run code ---------------------------------------------------


@pytest.mark.parametrize("script", ["eval.py", "generate.py"])
def test_a_checkpoint_config_naming_other_code_is_refused(tmp_path: Path, run_cli, script: str) -> None:
    marker = tmp_path / "created-by-the-checkpoint"
    hostile = {
        "ganforge": {"config": {"model": {"_target_": "builtins.open", "_args_": [str(marker), "w"]}}},
        "gan_steps": {"g_step": 0, "d_step": 0},
        "state_dict": {},
    }
    torch.save(hostile, tmp_path / "x.ckpt")
    out = [f"out_dir={tmp_path / 'o'}"] if script == "generate.py" else []
    result = run_cli([f"ckpt_path={tmp_path / 'x.ckpt'}", *out], script=script)
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: refusing {tmp_path / 'x.ckpt'}: its model _target_ 'builtins.open' is outside ganforge "
        "and torch.optim; a ganforge checkpoint only builds ganforge's own classes (and torch optimisers), "
        "so this file was altered or is not ganforge's"
    ]
    assert not marker.exists()


def test_trust_is_by_package_and_by_kind() -> None:
    assert untrusted_target("ganforge.networks.dcgan.DCGANGenerator") is None
    assert untrusted_target("torch.optim.lr_scheduler.LinearLR") is None
    assert "outside" in untrusted_target("os.system")
    assert "outside" in untrusted_target("torch.load")
    # inside the trusted packages, but not something a model is made of
    assert "is not a network" in untrusted_target("ganforge.atomic.atomic_save")
    assert "is not a network" in untrusted_target("ganforge.networks.dcgan.torch.load")
    assert "does not exist" in untrusted_target("ganforge.networks.nothing_here.Net")


@pytest.mark.parametrize("group", ["model", "data"])
def test_every_shipped_model_and_data_config_is_trusted(group: str) -> None:
    from ganforge.checkpoint import _targets

    for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
        cfg = compose_train([f"{group}={path.stem}"])
        from omegaconf import OmegaConf

        node = OmegaConf.to_container(cfg[group])  # unresolved: targets are literal in the configs
        targets = _targets(node, group)
        assert targets, path
        assert all(untrusted_target(t) is None for _, t in targets), (path, targets)


# 2. SIGTERM and Ctrl-C --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_with_its_code(
    tmp_path: Path, cache_dir: Path, signum: int, code: int
) -> None:
    args = [
        f"paths.log_dir={tmp_path / 'logs'}", *FAST, *SMALL_NETWORKS["dcgan"], "metrics=none",
        "max_g_steps=100000", "callbacks.sample_grid.every_n_g_steps=1",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("logs/train/runs/*/samples/g_step_0000003.png")):  # it is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr[-3000:]

    (message,) = error_lines(stderr)
    name = signal.Signals(signum).name
    assert message.startswith(f"error: {name}: stopped at g_step ")
    command = shlex.split(message.split("resume with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and command[-1].startswith("ckpt_path=")
    saved = Path(command[-1].removeprefix("ckpt_path="))
    g_step = int(message.split("g_step ")[1].split(",")[0])
    # >= : the signal can land while batch 3's hooks still run (its grid is written), and then the
    # run stops after batch 3, as it should
    assert torch.load(saved, **LOADS)["gan_steps"]["g_step"] == g_step >= 3
    run_dir = saved.parent.parent
    assert '"status": "interrupted"' in (run_dir / "job.json").read_text()

    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *command[2:], f"max_g_steps={g_step + 2}"],
        cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (last,) = [p for p in tmp_path.glob("logs/train/runs/*/checkpoints/last.ckpt") if p != saved]
    assert torch.load(last, **LOADS)["gan_steps"]["g_step"] == g_step + 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reaches", "signum", "code"),
    [("the process group", signal.SIGINT, 130), ("rank 1", signal.SIGTERM, 143)],
)
def test_a_signal_stops_every_ddp_rank_at_one_batch(
    tmp_path: Path, reaches: str, signum: int, code: int
) -> None:
    """Ctrl-C in a terminal signals the whole process group; `kill <pid>` one rank. A collective run
    from a signal handler (Lightning's SIGTERM handler broadcasts) hung both for minutes; a rank that
    stopped a batch before the other would leave it waiting in the next batch's collective."""
    import psutil

    args = [
        f"paths.log_dir={tmp_path / 'logs'}", "model=mlp", *SMALL_NETWORKS["mlp"], "trainer=ddp_sim",
        "data.image_size=16", "data.batch_size=16", "max_g_steps=100000", "metrics=none", "logger=csv",
        "extras.print_config=false", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=2",
        "callbacks.model_checkpoint.last_every_n_g_steps=5", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file():  # both ranks are training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    if reaches == "rank 1":
        (rank_1,) = psutil.Process(proc.pid).children()
        rank_1.send_signal(signum)
    else:
        os.killpg(proc.pid, signum)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the ranks hang after {signal.Signals(signum).name} to {reaches}")
    assert proc.returncode == code, stderr[-3000:]
    (message,) = error_lines(stderr)  # rank 0 says it for every rank
    assert message.startswith(f"error: {signal.Signals(signum).name}: stopped at g_step ")
    g_step = int(message.split("g_step ")[1].split(",")[0])
    assert torch.load(last, **LOADS)["gan_steps"]["g_step"] == g_step
    assert '"status": "interrupted"' in (tmp_path / "run" / "job.json").read_text()


# 3. A diverging run never poisons a checkpoint ---------------------------------------------------


def all_finite(checkpoint: dict) -> bool:
    from ganforge.checkpoint_io import TRAINING_STATE, first_non_finite

    return first_non_finite({k: checkpoint[k] for k in TRAINING_STATE}) is None


@pytest.mark.slow
def test_an_exploding_learning_rate_stops_the_run_and_keeps_only_finite_checkpoints(make_cfg) -> None:
    cfg = make_cfg(
        "max_g_steps=40",
        "model.scheduler_d={_target_:torch.optim.lr_scheduler.ExponentialLR,_partial_:true,gamma:10.0}",
        "callbacks.model_checkpoint.every_n_g_steps=2",
        "callbacks.model_checkpoint.last_every_n_g_steps=1",
        "callbacks.divergence_guard.every_n_g_steps=1000",  # leave it to the checkpoint checks
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint: ") as err:
        train(cfg)
    ckpts = sorted(Path(cfg.paths.output_dir, "checkpoints").glob("*.ckpt"))
    assert ckpts and all(all_finite(torch.load(p, **LOADS)) for p in ckpts)
    named = Path(str(err.value).split("last good checkpoint: ")[1])
    assert named.name == "last.ckpt" and named.is_file()


@pytest.mark.slow
def test_finite_but_absurd_weights_stop_the_run(make_cfg) -> None:
    cfg = make_cfg(
        "max_g_steps=200", "model.optimizer_d.lr=1e6", "callbacks.divergence_guard.every_n_g_steps=1"
    )
    with pytest.raises(TrainingDiverged, match=r"beyond callbacks\.divergence_guard\.max_abs_(loss|weight)="):
        train(cfg)


def test_a_non_finite_checkpoint_is_never_written(tmp_path: Path) -> None:
    io = SafeCheckpointIO()
    good = {"state_dict": {"w": torch.ones(3)}, "gan_steps": {"g_step": 5}}
    io.save_checkpoint(good, tmp_path / "last.ckpt")
    moments = {"exp_avg": torch.tensor([1.0, float("inf")])}
    bad = {"state_dict": {"w": torch.ones(3)}, "optimizer_states": [{"state": {0: moments}}]}
    with pytest.raises(TrainingDiverged, match=r"optimizer_states\.0\.state\.0\.exp_avg is not finite"):
        io.save_checkpoint(bad, tmp_path / "last.ckpt")
    assert torch.equal(torch.load(tmp_path / "last.ckpt", **LOADS)["state_dict"]["w"], torch.ones(3))
    assert io.last_written == tmp_path / "last.ckpt"


# 4. Resume is exact ------------------------------------------------------------------------------


def differences(a: object, b: object, where: str = "") -> list[str]:
    """Key paths where two checkpoints differ (tensors bitwise)."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list | tuple):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}/{i}")
        ]
    if isinstance(a, torch.Tensor):
        return [] if torch.equal(a, b) else [where]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def rows(run: Path) -> dict[str, dict[str, str]]:
    (path,) = run.glob("csv/metrics.csv")
    with path.open() as f:
        return {r["step"]: r for r in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.parametrize("stop", [17, 22], ids=["mid-epoch", "epoch-boundary"])  # 22 batches an epoch
def test_resume_is_bitwise_equal_to_a_straight_run(make_cfg, stop: int) -> None:
    settings = [
        "data.batch_size=64", "model.ema_decay=0.9",
        "model.scheduler_g={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:5,gamma:0.9}",
        "model/d_augment=diffaugment", "metrics=none",
    ]  # fmt: skip
    runs = {}  # each run's directory, read while its config is the current Hydra config

    def run(name: str, *overrides: str) -> Path:
        cfg = make_cfg(*settings, *overrides, run=name)
        runs[name] = Path(cfg.paths.output_dir)
        train(cfg)
        return runs[name] / "checkpoints" / "last.ckpt"

    straight = run("straight", "max_g_steps=30")
    stopped = run("first", f"max_g_steps={stop}")
    assert torch.load(stopped, **LOADS)["epoch"] == 0  # both stops fall in the first epoch
    resumed = run("resumed", "max_g_steps=30", f"ckpt_path={stopped}")
    a, b = (torch.load(path, **LOADS) for path in (straight, resumed))
    assert a["epoch"] == b["epoch"] == 1
    same = (
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "gan_steps",
        "rng_states",
        "epoch",
        "global_step",
    )
    assert differences({k: a[k] for k in same}, {k: b[k] for k in same}) == []
    before, after = rows(runs["straight"]), rows(runs["resumed"])
    assert after and all(after[step] == before[step] for step in after)  # losses, epoch, g_step


@pytest.mark.slow
def test_a_second_run_in_a_run_directory_in_use_is_refused(tmp_path: Path, run_cli) -> None:
    """Two runs given one hydra.run.dir wrote every step twice into one metrics.csv and overwrote
    each other's checkpoints and .hydra files; a run killed with -9 must not lock its directory."""
    run_dir = tmp_path / "same"
    args = [
        f"paths.log_dir={tmp_path / 'logs'}", "model=mlp", *SMALL_NETWORKS["mlp"], "data.image_size=16",
        "max_g_steps=100000", "metrics=none", "logger=csv", "extras.print_config=false",
        "callbacks.model_checkpoint.last_every_n_g_steps=5", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "seed=1"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "last.ckpt").is_file():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = run_cli([*args, "seed=2", "max_g_steps=2"])
        assert second.returncode == 1
        (message,) = error_lines(second.stderr)
        assert message.startswith(f"error: {run_dir} is the run directory of a run still in progress (pid ")
        assert f"pid {first.pid} on " in message and message.endswith("give this run its own hydra.run.dir")
        assert "seed=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()  # nothing of the second
    finally:
        first.kill()  # SIGKILL: the lock goes with the process
        first.wait()
    started_again = run_cli([*args, "seed=1", "max_g_steps=1"])  # the run's own restart is not refused
    assert started_again.returncode == 0, started_again.stderr[-2000:]
    assert f"{run_dir} already holds" in started_again.stdout


# 5. Checkpoint writes are atomic -----------------------------------------------------------------


def test_a_failed_write_removes_its_partial_file_and_keeps_the_previous(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    atomic_save({"v": torch.zeros(3)}, target)

    def full_disk(obj, f):
        f.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(GanforgeError, match=rf"no space left to write last.ckpt in {target.parent} "):
        atomic_save({"v": torch.ones(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, **LOADS)["v"], torch.zeros(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no partial file left


# A real full or read-only filesystem is a tmpfs of our own: that needs root and mount, as in CI.
CAN_MOUNT = os.geteuid() == 0 and shutil.which("mount") is not None
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="needs root and `mount -t tmpfs` (CI runs as root)")


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MiB filesystem."""
    mount_tmpfs(tmp_path / "disk", "size=1m")
    yield tmp_path / "disk"
    subprocess.run(["umount", str(tmp_path / "disk")], check=True)


@pytest.fixture
def read_only_disk(tmp_path: Path):
    mount_tmpfs(tmp_path / "ro", "ro,size=1m")
    yield tmp_path / "ro"
    subprocess.run(["umount", str(tmp_path / "ro")], check=True)


@needs_mount
def test_a_full_disk_leaves_the_previous_checkpoint_intact(tiny_disk: Path) -> None:
    target = tiny_disk / "last.ckpt"
    atomic_save({"v": torch.zeros(1000)}, target)  # 4 kB: fits
    with pytest.raises(GanforgeError, match=rf"no space left to write last.ckpt in {tiny_disk} "):
        atomic_save({"v": torch.zeros(1_000_000)}, target)  # 4 MB: does not
    assert torch.load(target, **LOADS)["v"].shape == (1000,)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["last.ckpt"]


# 6. A damaged cache entry heals --------------------------------------------------------------------


def test_a_damaged_cache_entry_is_recomputed_with_a_warning(make_cfg, tmp_path: Path, caplog) -> None:
    from omegaconf import OmegaConf

    from ganforge.config import instantiate
    from ganforge.metrics.evaluator import build_evaluator

    cfg = make_cfg("metrics=classifier", f"paths.cache_dir={tmp_path / 'cache'}")
    data = instantiate(cfg.data)
    data.setup("fit")
    settings = OmegaConf.to_container(cfg.metrics, resolve=True)
    first = build_evaluator(settings, data, torch.device("cpu"))
    (reference,) = (tmp_path / "cache" / "reference").glob("*.pt")
    (classifier,) = (tmp_path / "cache" / "classifiers").glob("*.pt")
    reference.write_bytes(b"")
    classifier.write_bytes(classifier.read_bytes()[:1000])

    with caplog.at_level(logging.WARNING):
        again = build_evaluator(settings, data, torch.device("cpu"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"cache entry {reference} is damaged" in w for w in warnings)
    assert any(f"cache entry {classifier} is damaged" in w for w in warnings)
    assert again.network.test_accuracy == first.network.test_accuracy  # retrained to the same weights
    assert torch.load(reference, **LOADS).keys() == {"features", "logits"}


def test_two_runs_needing_one_entry_compute_it_once(tmp_path: Path) -> None:
    from ganforge.cache import load_entry, locked

    path, computed = tmp_path / "entry.pt", []

    def get() -> None:
        with locked(path):
            if load_entry(path, lambda v: isinstance(v, dict)) is None:
                computed.append(threading.get_ident())
                time.sleep(0.5)  # a long computation: the other run must wait, not start its own
                atomic_save({"x": torch.ones(1)}, path)

    runs = [threading.Thread(target=get) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert len(computed) == 1


# 7. The smaller ones -------------------------------------------------------------------------------


def check_log_dir_error(run_cli, log_dir: Path, reason: str) -> None:
    result = run_cli([f"paths.log_dir={log_dir}"])
    assert result.returncode == 1, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        f"error: cannot write to paths.log_dir={log_dir} ({reason}); "
        "pass a writable folder, e.g. paths.log_dir=/tmp/ganforge-logs"
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_log_dir_behind_a_file_is_one_line(tmp_path: Path, run_cli) -> None:
    (tmp_path / "a-file").write_text("")
    check_log_dir_error(run_cli, tmp_path / "a-file" / "logs", "Not a directory")


@needs_mount
def test_a_read_only_log_dir_is_one_line(read_only_disk: Path, run_cli) -> None:
    check_log_dir_error(run_cli, read_only_disk / "logs", "Read-only file system")


def test_a_decompression_bomb_is_named_and_can_be_skipped(tmp_path: Path) -> None:
    root = write_shapes(tmp_path / "images", per_class=4)
    bomb = root / "top_left" / "bomb.png"
    Image.new("1", (16000, 16000)).save(bomb)  # 256 Mpx: over PIL's 179 Mpx hard limit
    settings = {"data_dir": str(root), "image_size": 16, "channels": 1, "in_memory": True, "num_workers": 0,
                "val_fraction": 0.0, "test_fraction": 0.0, "batch_size": 4}  # fmt: skip
    with pytest.raises(GanforgeError, match=rf"cannot read image {bomb} \(DecompressionBombError"):
        ImageFolderDataModule(**settings).setup("fit")
    data = ImageFolderDataModule(**settings, skip_unreadable=True)
    data.setup("fit")
    assert len(data.data_train) == 12  # the bomb skipped, the 12 real images kept


def test_fingerprint_hashes_in_chunks() -> None:
    images = torch.randint(0, 255, (200, 3, 64, 64), dtype=torch.uint8)  # 2.4 MB
    data = TensorDataset(images, torch.zeros(200, dtype=torch.long))
    tracemalloc.start()
    digest = fingerprint(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 500_000, peak  # no whole copy of the pixels
    assert digest == fingerprint(TensorDataset(images.clone(), torch.zeros(200, dtype=torch.long)))
    images[0, 0, 0, 0] += 1
    assert digest != fingerprint(data)


def test_in_memory_auto_is_sized_from_available_memory(monkeypatch) -> None:
    from ganforge.datamodules import files

    monkeypatch.setattr(files, "available_memory", lambda: 8 * 1024**3)
    assert files.in_memory_limit(world_size=1) == 2 * 1024**3
    assert files.in_memory_limit(world_size=4) == 512 * 1024**2


class KillsTheLoader(Callback):
    """What torch raises in the training loop when a loader worker is killed (the out-of-memory killer)."""

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.g_step == 3:
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")


def test_a_loader_worker_killed_during_training_is_one_line(make_cfg) -> None:
    cfg = add_callback(
        make_cfg("max_g_steps=10", "metrics=none", "callbacks.model_checkpoint.last_every_n_g_steps=2"),
        KillsTheLoader,
    )
    with pytest.raises(GanforgeError) as raised:
        train(cfg)
    last = Path(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    assert str(raised.value) == (
        "a data loading process died at g_step 3 (DataLoader worker (pid 4242) is killed by signal: "
        "Killed.); if memory ran out, lower data.num_workers or data.batch_size; "
        f"resume with ckpt_path={last}"
    )


@pytest.mark.slow
def test_ckpt_path_last_whose_newest_checkpoint_is_truncated_names_the_newest_good_one(make_cfg) -> None:
    first = make_cfg("metrics=none", "callbacks.model_checkpoint.every_n_g_steps=2", run="logs/train/runs/a")
    train(first)
    folder = Path(first.paths.output_dir, "checkpoints")
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    cfg = make_cfg("metrics=none", "max_g_steps=6", "ckpt_path=last", run="logs/train/runs/b")
    good = folder / "g_step_0000004.ckpt"
    with pytest.raises(GanforgeError) as raised:
        train(cfg)
    assert str(raised.value) == (
        f"ckpt_path={last} is not a readable checkpoint (RuntimeError); the newest checkpoint that loads "
        f"is {good}: pass ckpt_path={good}"
    )
