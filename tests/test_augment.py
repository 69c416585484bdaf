"""augment.py and the synthesize chain: the rows it reports, that labels are what it trains on, and
the mistakes it refuses before spending any time."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from PIL import Image

from ganforge.augment import augment
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.errors import GanforgeError
from ganforge.generate import export_checkpoint
from ganforge.train import train
from tests import wandb_records
from tests.conftest import compose_train, trained

FAST = ["data=digits", "data.image_size=16", "classifier.width=8", "classifier.feature_dim=32"]
EXPORT = {"num_samples": 400, "counts": None, "seed": 0, "format": "png", "batch_size": 200}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """400 samples of a tiny cDCGAN (4 steps on digits at 16x16), 40 per class."""
    tmp = tmp_path_factory.mktemp("export")
    export_checkpoint(trained(tmp, cache_dir, "model=cdcgan"), tmp / "synthetic", EXPORT, False, "cpu")
    return tmp / "synthetic"


def augment_cfg(tmp_path: Path, *overrides: str):
    return compose_train([f"paths.log_dir={tmp_path}", *FAST, *overrides], tmp_path / "run", config="augment")


def write_digits(root: Path, shuffle_labels: bool) -> Path:
    """The real digits training images as a class-folder tree (optionally with shuffled labels): a
    'synthetic' set whose quality is known."""
    data = DigitsDataModule(image_size=16)
    data.setup()
    images, labels = data.data_train.tensors
    if shuffle_labels:
        labels = labels[np.random.default_rng(0).permutation(len(labels))]
    for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(root / str(label) / f"{i}.png")
    return root


@pytest.mark.slow
def test_reports_real_mixed_and_synthetic_only_rows_in_table_csv_and_wandb(
    synthetic_dir: Path, tmp_path: Path, no_wandb_account
) -> None:
    cfg = augment_cfg(
        tmp_path, "data.train_fraction=0.2", f"synthetic_dir={synthetic_dir}", "seeds=[0,1]",
        "ratios=[1,0.5]", "classifier.steps=3", "strategies=[real,mixed,synthetic_only]",
    )  # fmt: skip
    summary = augment(cfg, tmp_path / "out")
    # 20% of digits' 1,618 training images, 32 per class; ratios sorted; CAS on all 400 samples
    assert [(r["setting"], r["real images"], r["synthetic images"], r["seeds"]) for r in summary] == [
        ("real", 320, 0, 2),
        ("real + synthetic x0.5", 320, 160, 2),
        ("real + synthetic x1", 320, 320, 2),
        ("synthetic only (CAS)", 0, 400, 2),
    ]
    assert all(0 <= r["mean"] <= 1 and r["std"] >= 0 for r in summary)
    assert all(
        0 <= r["balanced accuracy"] <= 1 and r["rare-class recall"] is None for r in summary
    )  # balanced
    lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert lines[0] == (
        "strategy,setting,value,real images,synthetic images,seed,test accuracy,balanced accuracy,"
        "rare-class recall,synthetic filter"
    )
    assert len(lines) == 9
    assert (tmp_path / "out" / "summary.csv").read_text().count("\n") == 5

    (run_file,) = (tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb")
    logged = wandb_records.summary(run_file)
    for row in summary:
        assert logged[f"test_accuracy/{row['setting']}"] == pytest.approx(row["mean"])
    assert {"results/_type", "summary/_type"} <= set(logged)  # the two tables


@pytest.mark.slow
def test_trains_on_the_synthetic_labels(tmp_path: Path) -> None:
    """Real images as the 'synthetic' set: CAS is high with their labels and near chance with shuffled
    ones — so the rows measure the synthetic data, labels included."""
    accuracy = {}
    for shuffled in (False, True):
        folder = write_digits(tmp_path / f"shuffled_{shuffled}", shuffled)
        cfg = augment_cfg(
            tmp_path / str(shuffled), f"synthetic_dir={folder}", "seeds=[0]", "strategies=[synthetic_only]",
            "classifier.steps=150", "wandb.enabled=false",
        )  # fmt: skip
        accuracy[shuffled] = augment(cfg, tmp_path / f"out_{shuffled}")[-1]["mean"]
    assert accuracy[False] >= 0.85 and accuracy[True] <= 0.3, accuracy


def test_refuses_unlabelled_or_too_small_synthetic_sets(
    tmp_path: Path, cache_dir: Path, synthetic_dir
) -> None:
    unconditional = tmp_path / "unlabelled"
    export_checkpoint(trained(tmp_path, cache_dir, "model=dcgan"), unconditional, EXPORT, False, "cpu")
    cases = [
        (f"synthetic_dir={unconditional}", "has no class labels (an unconditional model's export)"),
        (
            f"synthetic_dir={synthetic_dir}",
            "ratio 5 needs 7185 synthetic images (1437 real), the synthetic set has 400",
        ),
        (f"synthetic_dir={tmp_path / 'nope'}", "is not a folder; make one with generate.py"),
        ("ratios=[0]", "ratios are synthetic images per real image and must be positive"),
    ]
    for override, message in cases:
        with pytest.raises(GanforgeError, match=re.escape(message)):
            augment(
                augment_cfg(tmp_path, override, "ratios=[5]" if "ratios" not in override else override),
                tmp_path,
            )


@pytest.mark.slow
def test_synthesize_chain_trains_exports_and_measures_in_one_run(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = (
        "experiment=scarce_mnist", "data=digits", "data.image_size=16", "data.batch_size=16", "model=cdcgan",
        "max_g_steps=4", "synthesize.export.num_samples=200", "synthesize.downstream.seeds=[0]",
        "synthesize.downstream.ratios=[1]", "synthesize.downstream.classifier.steps=2",
        "synthesize.downstream.classifier.width=8", "data.train_fraction=0.1",
    )  # fmt: skip
    cfg = make_cfg(*overrides)
    _, where = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (
        where["synthetic data"] == str(out / "synthetic") and (out / "synthetic" / "manifest.json").is_file()
    )
    assert "best.ckpt" in (out / "synthetic" / "manifest.json").read_text()  # the best checkpoint by FID
    rows = (out / "augment" / "summary.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == [  # every default strategy
        "real",
        "real + augmentation",
        "real + synthetic x1",
        "real + synthetic x1 + augmentation",
        "real + filtered synthetic (p >= 0.9) x1",
        "real + 0.1 x synthetic loss",
        "real + 0.5 x synthetic loss",
        "real + 1 x synthetic loss",
        "synthetic (50% of steps) then real",
        "synthetic only (CAS)",
    ]
    assert rows[1].split(",")[3] == "160"  # the GAN's own scarce subset: 10% of digits, 16 per class

    # the job starts again in its run directory (killed during the downstream study, requeued):
    # training is done, the export is the same one, so it is reused rather than refused or redone
    manifest = (out / "synthetic" / "manifest.json").read_text()
    quality = json.loads((out / "augment" / "gan.json").read_text())["quality"]
    assert {"fid", "fid_best", "class_accuracy"} <= set(quality)
    with caplog.at_level(logging.INFO, logger="ganforge.synthesize"):
        train(cfg)
    assert (out / "synthetic" / "manifest.json").read_text() == manifest
    assert json.loads((out / "augment" / "gan.json").read_text())["quality"] == quality  # not evaluated again
    assert any("already holds this checkpoint's export" in m for m in caplog.messages)
    with open_dict(cfg):
        cfg.synthesize.export.seed = 1  # another export: the folder is not this one's, so it is refused
    with pytest.raises(GanforgeError, match=re.escape("holds an export of another checkpoint or with other")):
        train(cfg)
    assert (out / "synthetic" / "manifest.json").read_text() == manifest  # refused, not replaced

    # the finished run directory, moved (to faster disk, another sweep folder) and started again to
    # add a strategy: its checkpoints are where it is now, so the same export is found and reused
    moved = Path(shutil.move(out, tmp_path / "moved"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ganforge.synthesize"):
        train(make_cfg(*overrides, "synthesize.downstream.strategies=[real]", run="moved"))
    assert (moved / "synthetic" / "manifest.json").read_text() == manifest
    assert any("already holds this checkpoint's export" in m for m in caplog.messages)
    assert (moved / "augment" / "summary.csv").read_text().count("\n") == 2  # header and the one row


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=dcgan"], "synthesize needs a conditional model (model=cdcgan or csngan)"),
        (
            ["model=cdcgan", "synthesize.export.num_samples=100"],
            "raise synthesize.export.num_samples to 7185",
        ),
        (
            ["model=cdcgan", "synthesize.out_dir=${paths.output_dir}/mine"],
            "set synthesize.out_dir to a new folder",
        ),
    ],
)
def test_synthesize_refuses_before_training(make_cfg, overrides: list[str], message: str) -> None:
    cfg = make_cfg("synthesize=default", "data.image_size=16", *overrides)
    if "synthesize.out_dir" in message:  # a folder of the user's own that is not an export
        (Path(cfg.synthesize.out_dir) / "mine.txt").parent.mkdir(parents=True)
        (Path(cfg.synthesize.out_dir) / "mine.txt").write_text("keep me")
    with pytest.raises(GanforgeError, match=re.escape(message)):
        train(cfg)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
    if "synthesize.out_dir" in message:
        assert (Path(cfg.synthesize.out_dir) / "mine.txt").read_text() == "keep me"
