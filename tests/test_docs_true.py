"""What the README and the configs say, checked where a newcomer found it untrue (issue 29): logged rows,
partial exports read back, the debug overlays, conf/local, data folders, exports from other data."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate as hydra_instantiate
from PIL import Image
from torchvision.datasets import CIFAR10

from ganforge import augment, synthetic_dataset
from ganforge.config import instantiate
from ganforge.datamodules.cifar10 import CIFAR10DataModule
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from ganforge.errors import GanforgeError
from ganforge.train import train
from tests.conftest import CONF, ROOT
from tests.test_datamodules import write_cifar, write_mnist

DIGITS = "ganforge.datamodules.digits.DigitsDataModule"


@pytest.mark.slow
def test_every_logged_row_carries_g_step_learning_rates_included(make_cfg) -> None:
    """Lightning's LearningRateMonitor logged rows of its own, without g_step; and a batch with only a
    D update logged none."""
    cfg = make_cfg("model.d_steps_per_g=2", "max_g_steps=2", "metrics=none")
    _, where = train(cfg)
    with open(where["metrics"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]  # one row per batch (logged every batch)
    assert [r["g_step"] for r in rows] == ["0.0", "1.0", "1.0", "2.0"]
    assert all(r["lr-Adam/generator"] and r["lr-Adam-1/discriminator"] and r["train/d_loss"] for r in rows)


def test_a_partial_export_reads_back_with_the_classes_it_wrote(make_cfg, tmp_path: Path) -> None:
    """counts={3: 4, 7: 2} writes folders 3/ and 7/ only: labels stay 3 and 7, and the class names read
    back are the export's, so names[label] is the folder (as from its npz)."""
    model = instantiate(make_cfg("model=cdcgan").model)
    for fmt in ("png", "npz"):
        synthetic_dataset.export(model, tmp_path / fmt, [0, 0, 0, 4, 0, 0, 0, 2, 0, 0], 0, 4, fmt, False, {})
    png, npz = synthetic_dataset.load(tmp_path / "png"), synthetic_dataset.load(tmp_path / "npz")
    assert png[1].tolist() == npz[1].tolist() == [3, 3, 3, 3, 7, 7]
    assert png[2] == npz[2] == [str(c) for c in range(10)]
    assert [png[2][c] for c in png[1]] == ["3"] * 4 + ["7"] * 2


@pytest.mark.slow
def test_fast_dev_run_writes_no_checkpoint(make_cfg) -> None:
    cfg = make_cfg("debug=fdr", "metrics=none")
    _, where = train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt")) and "last checkpoint" not in where


@pytest.mark.slow
def test_the_profiler_overlay_prints_its_table(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg("debug=profiler", "max_g_steps=2", "metrics=none")
    with caplog.at_level(logging.INFO, logger="ganforge.profiler"):
        train(cfg)
    table = Path(cfg.paths.output_dir, "fit-profile.txt").read_text()
    assert "run_training_batch" in table
    assert any(table.strip() in r.getMessage() for r in caplog.records)


def compose_with_local(conf: Path, content: str) -> object:
    """conf/train.yaml as Hydra composes it for a job (hydra node kept), with this conf/local/default.yaml."""
    (conf / "local" / "default.yaml").write_text(content)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("train", return_hydra_config=True)


def test_a_local_config_without_its_package_line_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = shutil.copytree(CONF, tmp_path / "conf")  # never a conf/local/default.yaml in the repository
    settings = "paths:\n  data_dir: /datasets\n"
    try:
        for content in ("# @package _global_\n" + settings, settings):
            cfg = compose_with_local(conf, content)
            caplog.clear()
            hydra_instantiate(cfg.hydra.callbacks.local_config).on_job_start(config=cfg, task_function=None)
    finally:
        GlobalHydra.instance().clear()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("conf/local/default.yaml is ignored") and "(paths)" in warning
    assert "`# @package _global_` as its first line" in warning and "\n" not in warning


@pytest.mark.parametrize(
    ("module", "given"),
    [
        (MNISTDataModule, "MNIST/raw"),
        (MNISTDataModule, "MNIST"),
        (FashionMNISTDataModule, "FashionMNIST/raw"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
    ],
)
def test_data_dir_may_be_the_data_sets_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: type, given: str
) -> None:
    """data.data_dir=…/MNIST/raw (where the files are) looked for …/MNIST/raw/MNIST/raw."""
    if module is CIFAR10DataModule:
        md5s = write_cifar(tmp_path)  # 20 training images, 6 test images
        monkeypatch.setattr(
            CIFAR10, "train_list", [[f"data_batch_{k}", md5s[f"data_batch_{k}"]] for k in range(1, 6)]
        )
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
        sizes = (20, 6)
    else:
        write_mnist(tmp_path, given.split("/")[0])
        sizes = (60, 20)
    dm = module(data_dir=str(tmp_path / given), val_size=2, download=False)
    dm.setup()
    assert (len(dm.data_train) + len(dm.data_val), len(dm.data_test)) == sizes


def test_an_export_from_a_gan_trained_on_other_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digits GAN's export measured against MNIST: its labels are the digits set's classes."""
    monkeypatch.setenv("GANFORGE_ROOT", str(ROOT))  # as the entry scripts set it: conf/data names the sets
    export = tmp_path / "export"
    for c in range(2):
        (export / str(c)).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(export / str(c) / "0.png")
    manifest = {"classes": ["0", "1"], "training_config": {"data": {"_target_": DIGITS}}}
    (export / synthetic_dataset.MANIFEST).write_text(json.dumps(manifest))
    mnist = MNISTDataModule(data_dir=str(tmp_path), image_size=8, download=False)
    with pytest.raises(GanforgeError) as refused:
        augment.load_synthetic(str(export), mnist)
    assert str(refused.value) == (
        f"synthetic_dir={export} was generated by a GAN trained on data=digits, but augment.py measures on "
        "data=mnist: its labels are the other data set's classes; export from a GAN trained on data=mnist, "
        "or pass data=digits to augment.py"
    )
    _, labels = augment.load_synthetic(str(export), DigitsDataModule(image_size=8))  # its own data: read
    assert labels.tolist() == [0, 1]
