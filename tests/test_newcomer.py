"""What a newcomer (a lightning-hydra-template user) meets: long steps that show life in a log file,
an export that says its size first, a stop before training that ends as any stop does, `make help`
and `make clean-logs`, early stopping by FID, and a submitit sweep folder without a literal `%j`."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

import ganforge.progress
from ganforge.atomic import MANY_FILES, staged_dir
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import SmallCNN, fit_classifier
from ganforge.synthetic_dataset import check_space, export
from ganforge.train import train
from tests.conftest import FAST, ROOT, SMALL_NETWORKS, tiny_module

LOADS = {"map_location": "cpu", "weights_only": True}
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def log_file_output(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """stdout is not a terminal (a log file, a pipe), and progress is logged at every step."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    for forcing in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # rich's overrides of the TTY test
        monkeypatch.delenv(forcing, raising=False)
    monkeypatch.setattr(ganforge.progress, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO)


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def export_20(out: Path) -> None:
    """20 samples of a tiny unconditional model (4x4 images) as PNG files, 8 per batch."""
    export(tiny_module(), out, [20], seed=0, batch_size=8, fmt="png", overwrite=False, manifest={})


# Long steps show life in a log file -----------------------------------------------------------------


def test_the_classifier_logs_its_progress_when_stdout_is_not_a_terminal(
    log_file_output: None, caplog: pytest.LogCaptureFixture
) -> None:
    data = TensorDataset(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.arange(64) % 4)
    fit_classifier(SmallCNN(1, 4, 8, 16), data, torch.device("cpu"), epochs=2, batch_size=16, progress="clf")
    lines = messages(caplog, "ganforge.progress")
    assert len(lines) == 8  # one per step here; every LOG_EVERY_S seconds in a real run
    pattern = r"clf: (\d)/8 steps \(\d+%\), epoch (\d)/2, train accuracy [\d.]+%, 0:00:\d\d elapsed"
    found = [re.match(pattern, line) for line in lines]
    assert all(found), lines
    assert [(m[1], m[2]) for m in found] == [(str(s), str(1 + (s > 4))) for s in range(1, 9)]
    assert "left" in lines[-2]  # rich's estimate of the time left, once it has a speed


def test_an_export_logs_its_progress_when_stdout_is_not_a_terminal(
    log_file_output: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    export_20(tmp_path / "out")
    lines = messages(caplog, "ganforge.progress")
    assert [line.split(",")[0] for line in lines] == [
        "exporting: 8/20 images (40%)",
        "exporting: 16/20 images (80%)",
        "exporting: 20/20 images (100%)",
    ]


def test_an_export_says_how_big_it_will_be_and_refuses_what_cannot_fit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    disk = {"f_bavail": 10_000_000, "f_frsize": 4096}  # 41 GB free in 4 KiB blocks
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(**disk))
    export_20(out)
    (size,) = messages(caplog, "ganforge.synthetic_dataset")
    # a 4x4 PNG is far smaller than a block, and takes one
    assert (
        size
        == f"exporting 20 images of 1x4x4 as 20 PNG files to {out}: about 81.9 kB on disk, 41.0 GB free there"
    )

    caplog.clear()
    check_space(tmp_path / "big", "png", 2_000_000, (1, 4, 4))  # 8.2 GB: fits, but 2e6 files
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"exporting 2,000,000 images of 1x4x4 as 2,000,000 PNG files to {tmp_path / 'big'}: about 8.2 GB on "
        "disk, 41.0 GB free there. A large export: check num_samples"
    )

    disk["f_bavail"] = 10  # 41 kB free
    with pytest.raises(GanforgeError) as refused:
        export_20(tmp_path / "new")
    assert str(refused.value) == (
        f"out_dir={tmp_path / 'new'}: 20 images of 1x4x4 as 20 PNG files need about 81.9 kB on disk and "
        f"{tmp_path} has 41.0 kB free; free space, choose an out_dir on a larger disk, export fewer samples, "
        "or format=npz (4.6 kB)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing was written for it


def test_a_stopped_write_says_it_is_removing_many_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_dir(target, lambda: None, "out_dir") as tmp:
        for i in range(MANY_FILES + 1):
            (tmp / f"{i}.png").write_bytes(b"")
        raise KeyboardInterrupt
    assert f"removing the partial {target} (1,001 files written so far) …" in caplog.messages
    assert list(tmp_path.iterdir()) == []


# A stop before the first training step ends as any stop does --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["Ctrl-C", "SIGTERM"]
)
def test_a_signal_while_the_metrics_classifier_trains_ends_the_run_as_a_stop(
    tmp_path: Path, signum: int, code: int
) -> None:
    """The classifier trains inside Lightning's fit set-up, before GracefulInterrupt takes over."""
    cache = tmp_path / "cache"
    args = [
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={cache}", *FAST, *SMALL_NETWORKS["dcgan"],
        "metrics.classifier.epochs=100000", "metrics.classifier.max_steps=null",  # trains until stopped
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(
        "training the digits classifier" in p.read_text() for p in tmp_path.glob("logs/*/runs/*/*.log")
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(1)  # well into its training
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == code, stderr[-3000:]
    name = signal.Signals(signum).name
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: {name}: stopped before the first training step, so nothing was trained or saved; run the "
        "same command to start again (caches finished so far are kept)"
    ]
    assert "Traceback" not in stderr
    (job,) = tmp_path.glob("logs/train/runs/*/job.json")
    assert json.loads(job.read_text())["status"] == "interrupted"
    assert [p.name for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


# make help, make clean-logs ----------------------------------------------------------------------------

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@needs_make
def test_make_help_lists_every_target_with_its_description(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    (phony,) = [line for line in makefile.splitlines() if line.startswith(".PHONY:")]
    for command in (["help"], []):  # `make` alone prints it too
        out = subprocess.run(
            ["make", "-s", "-f", str(ROOT / "Makefile"), *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        listed = {line.split()[1]: line.split(None, 2)[2] for line in out.stdout.splitlines()}
        assert sorted(listed) == sorted(phony.split()[1:])
        for target, description in listed.items():
            assert f"## {description}\n{target}:" in makefile


@needs_make
def test_make_clean_logs_clears_every_task_and_keeps_studies_and_the_cache(tmp_path: Path) -> None:
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    for task in ("train", "eval", "augment", "generate", "debug"):
        (logs / task / "runs" / "1").mkdir(parents=True)
        (logs / task / "runs" / "1" / f"{task}.log").write_text("x")
    for kept in (logs / ".gitkeep", logs / "optuna.db", cache / "classifiers" / "digits.pt"):
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text("")
    out = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "clean-logs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in logs.iterdir()) == [".gitkeep", "optuna.db"]
    assert (cache / "classifiers" / "digits.pt").is_file()
    assert "clear it with: rm -rf cache" in out.stdout


# Early stopping by FID ------------------------------------------------------------------------------


def test_early_stopping_counts_evaluations_and_stops_the_run(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert "early_stopping" not in make_cfg().callbacks  # not a default
    cfg = make_cfg(
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.min_delta=1e9",  # no evaluation after the first counts as better
        "callbacks.sample_quality.every_n_g_steps=2",
        "max_g_steps=40",
    )
    train(cfg)
    # evaluations at g_step 2 (the best), 4 and 6 (two without improvement): stops at 6, mid-epoch
    last = torch.load(Path(cfg.paths.output_dir, "checkpoints", "last.ckpt"), **LOADS)
    assert last["gan_steps"]["g_step"] == 6
    assert any("did not improve in the last 2 records" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "metrics=none",
            "callbacks.early_stopping stops on val/fid, and this run measures no sample quality",
        ),
        (
            "callbacks.early_stopping.monitor=val/kid",
            "callbacks.early_stopping.monitor=val/kid is not measured",
        ),
    ],
)
def test_early_stopping_without_its_metric_is_one_line(make_cfg, override: str, message: str) -> None:
    cfg = make_cfg(
        "callbacks=[default,early_stopping]", "callbacks.sample_quality.every_n_g_steps=2", override
    )
    with pytest.raises(GanforgeError, match=re.escape(message)):
        train(cfg)


# A submitit sweep leaves no literal %j folder ---------------------------------------------------------


@pytest.mark.slow
def test_a_submitit_local_sweep_leaves_no_literal_job_folder(tmp_path: Path, cache_dir: Path) -> None:
    args = [
        "-m", "hydra/launcher=submitit_local", f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={cache_dir}", *FAST, *SMALL_NETWORKS["dcgan"], "metrics=none", "max_g_steps=1",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (submitit,) = tmp_path.glob("logs/train/multiruns/*/.submitit")
    (job,) = submitit.iterdir()
    assert job.name.isdigit()  # the job's own folder; no `%j`
