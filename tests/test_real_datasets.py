"""MNIST and CelebA data modules on the real files in ../shared/datasets, when that folder exists.

The data are copied into tmp_path first: torchvision extracts archives next to them, and ../shared is
read-only for us. Downloads are disabled, so these also prove that the offline paths really work.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from ganforge.datamodules.celeba import CelebADataModule
from ganforge.datamodules.mnist import MNISTDataModule
from tests.conftest import SMALL_NETWORKS

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MNIST_RAW = DATASETS / "MNIST" / "raw"
CELEBA = DATASETS / "celeba"

# CelebA at its real 64x64 size; only the networks are narrowed, and 2 generator steps of 8 per rank
FAST_CLI = [*SMALL_NETWORKS["dcgan"], "max_g_steps=2", "data.batch_size=8", "extras.print_config=false"]

pytestmark = pytest.mark.skipif(not DATASETS.exists(), reason="../shared/datasets not present")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails as offline, so a pass means the local files were used."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_mnist_from_the_original_archives(tmp_path: Path) -> None:
    """The four official .gz files, as a user who downloaded them by hand would have them."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    archives = sorted(MNIST_RAW.glob("*.gz"))
    assert len(archives) == 4
    for archive in archives:
        shutil.copy(archive, raw)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=True, batch_size=128)
    dm.prepare_data()  # md5-verified and extracted offline
    dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == (55000, 5000, 10000)
    images, labels = dm.data_test.tensors
    assert images.shape == (10000, 1, 32, 32) and images.dtype == torch.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official test set, in file order
    assert images.float().mean() / 255 == pytest.approx(0.13, abs=0.02)  # MNIST's well-known mean intensity
    counts = Counter(dm.data_train.tensors[1].tolist())
    assert sorted(counts) == list(range(10)) and all(4500 < n < 6500 for n in counts.values())
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch[0].shape == (128, 1, 32, 32) and batch[0].min() == -1 and batch[0].max() == 1


@pytest.mark.parametrize("with_partition", [True, False], ids=["partition file", "fractions"])
def test_celeba_subset(tmp_path: Path, with_partition: bool, caplog: pytest.LogCaptureFixture) -> None:
    """200 real aligned faces; where the official split leaves val or test empty, a seeded split is used."""
    chosen = sorted(CELEBA.glob("img_align_celeba/*.jpg"))[:200]
    assert len(chosen) == 200
    (tmp_path / "img_align_celeba").mkdir()
    for image in chosen:
        shutil.copy(image, tmp_path / "img_align_celeba")
    if with_partition:
        copied = Path(shutil.copy(CELEBA / "list_eval_partition.txt", tmp_path))
        partition = dict(line.split() for line in copied.read_text().splitlines())
        codes = Counter(int(partition[image.name]) for image in chosen)
        expected = (codes[0], codes[1], codes[2])
        falls_back = not (codes[1] and codes[2])
        if falls_back:
            expected = (180, 10, 10)  # the default 5 % / 5 % fractions, with a warning
    else:
        falls_back, expected = False, (180, 10, 10)

    dm = CelebADataModule(data_dir=str(tmp_path), image_size=64, batch_size=16, num_workers=0)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert (len(dm.data_train), len(dm.data_val), len(dm.data_test)) == expected
    assert ("using a seeded split instead" in caplog.text) == falls_back
    images = dm.data_train.tensors[0]
    assert images.shape == (expected[0], 3, 64, 64) and images.dtype == torch.uint8
    assert 60 < images.float().mean() < 200 and images.float().std() > 30  # photos: neither blank nor flat
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch[0].shape == (16, 3, 64, 64) and -1 <= batch[0].min() < batch[0].max() <= 1


@pytest.mark.slow
def test_issue_command_celeba_ddp_sim(tmp_path: Path, run_script) -> None:
    """`python train.py model=dcgan data=celeba trainer=ddp_sim data.data_dir=<img_align_celeba copy>`."""
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    for jpg in sorted((CELEBA / "img_align_celeba").glob("*.jpg"))[:64]:
        shutil.copy(jpg, images)
    args = [
        "model=dcgan",
        "data=celeba",
        "trainer=ddp_sim",
        f"data.data_dir={images}",
        *FAST_CLI,
    ]
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["gan_steps"]["g_step"] == 2
    assert ckpt["ganforge"]["config"]["data"]["image_size"] == 64
