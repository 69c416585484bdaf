"""W&B tracking, offline: what a run logged, read back from the files W&B wrote; failed runs as failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Callback
from PIL import Image

from ganforge.errors import GanforgeError
from ganforge.tracking import wandb_offline
from ganforge.train import train
from tests import wandb_records


def run_file(output_dir: str) -> Path:
    (path,) = Path(output_dir, "wandb").glob("offline-run-*/run-*.wandb")
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_offline_run_logs_metrics_images_config_and_finishes(make_cfg, no_wandb_account) -> None:
    cfg = make_cfg(
        "logger=wandb",
        "callbacks.sample_quality.every_n_g_steps=2",
        "callbacks.sample_grid.every_n_g_steps=2",
    )
    _, where = train(cfg)
    path = run_file(cfg.paths.output_dir)
    rows = wandb_records.history(path)
    keys = set().union(*rows)
    assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= keys
    assert {"lr-Adam/generator", "lr-Adam-1/discriminator"} <= keys  # LearningRateMonitor
    assert {"val/fid", "val/fid_best", "val/classes_covered"} <= keys
    samples = [r for r in rows if r.get("samples/_type") == "images/separated"]
    real = [r for r in rows if r.get("real/_type") == "images/separated"]
    assert len(samples) == 3 and len(real) == 1  # g_step 0, 2, 4 and the real grid once
    assert [r["g_step"] for r in samples + real] == [0, 2, 4, 0]  # every row carries g_step
    # the images W&B wrote are the run's own PNG grids, pixel for pixel (not black)
    grids = Path(cfg.paths.output_dir, "samples")
    expected = [*sorted(grids.glob("g_step_*.png")), grids / "real.png"]
    logged = [row[f"{key}/filenames"] for key, rows in (("samples", samples), ("real", real)) for row in rows]
    assert len(expected) == len(logged) == 4
    for (name,), grid in zip(logged, expected, strict=True):
        image = pixels(path.parent / "files" / name)
        assert image.max() > 0 and np.array_equal(image, pixels(grid)), (name, grid.name)
    config = wandb_records.config(path)
    assert config["model"]["generator"]["image_size"] == 16 and config["model/params_generator"] > 0
    assert wandb_records.exit_code(path) == 0
    assert where["W&B (offline)"] == f"upload with: wandb sync {path.parent}"


class Explode(Callback):
    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if pl_module.g_step == 2:
            raise RuntimeError("diverged")


@pytest.mark.slow
def test_failed_run_is_recorded_as_failed(make_cfg, no_wandb_account) -> None:
    cfg = make_cfg("logger=wandb", f"+callbacks.explode._target_={__name__}.Explode")
    with pytest.raises(RuntimeError, match="diverged"):
        train(cfg)
    assert wandb_records.exit_code(run_file(cfg.paths.output_dir)) == 1


def test_offline_unless_an_account_is_reachable(tmp_path: Path, no_wandb_account, monkeypatch) -> None:
    assert wandb_offline()
    netrc = tmp_path / "home" / ".netrc"
    netrc.parent.mkdir(parents=True)
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert not wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "online")
    assert not wandb_offline()
    netrc.unlink()
    with pytest.raises(GanforgeError, match="WANDB_MODE=online but W&B has no API key here"):
        wandb_offline()  # refused before the run, not by wandb once it has started
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert not wandb_offline()


def test_checkpoint_artifacts_offline_are_refused_with_the_fix(make_cfg, no_wandb_account) -> None:
    """Uploading checkpoints needs W&B online (Lightning refuses it offline): say so before training."""
    cfg = make_cfg("logger=wandb", "logger.wandb.log_model=true")
    with pytest.raises(
        GanforgeError, match=r"log in \(`wandb login` or WANDB_API_KEY\) or set logger.wandb.log_model=false"
    ):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "wandb").exists()
