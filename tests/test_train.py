"""Real (tiny) training runs: every model trains, writes what it promises, and resumes where it stopped."""

from __future__ import annotations

import csv
import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest
import torch
from lightning.pytorch import Callback

from ganforge.errors import GanforgeError
from ganforge.metrics.sample_quality import SampleQuality
from ganforge.train import main, train
from tests.conftest import add_callback, assert_both_networks_learned


def read_metrics(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_short_run_trains_both_networks_and_writes_checkpoints_and_grids(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}", "callbacks.sample_grid.every_n_g_steps=2")
    _, where = train(cfg)
    run = Path(cfg.paths.output_dir)

    rows = read_metrics(where["metrics"])
    losses = [float(r[k]) for r in rows for k in ("train/d_loss", "train/g_loss") if r.get(k)]
    assert len(losses) == 8 and len(set(losses)) > 2  # both losses at each of the 4 steps, and moving
    assert_both_networks_learned(run / "checkpoints" / "last.ckpt")
    assert {"train/d_real", "train/d_fake", "g_step"} <= set(rows[0])

    ckpt = load(run / "checkpoints" / "last.ckpt")
    assert ckpt["gan_steps"] == {"g_step": 4, "d_step": 4}
    assert ckpt["global_step"] == 8  # Lightning counts D and G optimizer steps
    assert ckpt["ganforge"]["config"]["model"]["generator"]["image_size"] == 16
    assert ckpt["state_dict"]["fixed_noise"].shape == (64, 100)

    grids = sorted(p.name for p in (run / "samples").glob("g_step_*.png"))
    assert grids == ["g_step_0000000.png", "g_step_0000002.png", "g_step_0000004.png"]
    assert (run / "samples" / "real.png").is_file()  # real training images, once, to compare against
    assert where["last checkpoint"].endswith("last.ckpt") and "sample grids" in where


@pytest.mark.slow
def test_d_steps_per_g_budget_is_in_generator_steps(make_cfg) -> None:
    cfg = make_cfg("model.d_steps_per_g=3", "max_g_steps=3", "callbacks.model_checkpoint.every_n_g_steps=1")
    train(cfg)
    ckpts = Path(cfg.paths.output_dir, "checkpoints")
    last = load(ckpts / "last.ckpt")
    assert last["gan_steps"] == {"g_step": 3, "d_step": 9}
    assert last["global_step"] == 12
    # every generator step (4 optimizer steps at d_steps_per_g=3), named by generator step
    assert sorted(p.name for p in ckpts.glob("g_step_*.ckpt")) == [
        f"g_step_000000{i}.ckpt" for i in (1, 2, 3)
    ]


@pytest.mark.slow
def test_resume_continues_steps_optimizers_and_fixed_noise(make_cfg) -> None:
    first = make_cfg("max_g_steps=3", run="first")
    train(first)
    last = Path(first.paths.output_dir, "checkpoints", "last.ckpt")
    before = load(last)

    second = make_cfg("max_g_steps=6", f"ckpt_path={last}", run="second")
    train(second)
    after = load(Path(second.paths.output_dir, "checkpoints", "last.ckpt"))

    assert after["gan_steps"] == {"g_step": 6, "d_step": 6}
    assert after["global_step"] == 12
    assert torch.equal(after["state_dict"]["fixed_noise"], before["state_dict"]["fixed_noise"])
    adam_g_steps = [s["step"].item() for s in after["optimizer_states"][0]["state"].values()]
    assert set(adam_g_steps) == {6.0}  # one Adam state continued, not restarted
    grids = sorted(p.name for p in Path(second.paths.output_dir, "samples").glob("*.png"))
    assert grids[0] == "g_step_0000003.png"  # the resumed run starts from generator step 3


@pytest.mark.slow
@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit"])
def test_debug_overlays_train(make_cfg, debug: str) -> None:
    cfg = make_cfg(f"debug={debug}")
    metrics, _ = train(cfg)
    assert metrics and all(math.isfinite(v) for v in metrics.values())
    expected_g_steps = 1 if debug == "fdr" else 4  # fast_dev_run: one batch = one D and one G step
    assert metrics["g_step"] == expected_g_steps


@pytest.mark.slow
def test_the_profiler_overlay_writes_where_the_time_went(make_cfg) -> None:
    cfg = make_cfg("debug=profiler", "max_g_steps=3")
    _, where = train(cfg)
    profile = Path(cfg.paths.output_dir, "fit-profile.txt")
    assert "Action" in profile.read_text() and "run_training_batch" in profile.read_text()
    assert where["profile"] == str(profile)  # the end-of-run list says where it went


class BarTotals(Callback):
    """Records the progress bar's batch total at each epoch start."""

    seen: ClassVar[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        BarTotals.seen.append(trainer.progress_bar_callback.total_train_batches)


@pytest.mark.slow
def test_progress_bar_total_counts_batches_not_optimizer_steps(make_cfg) -> None:
    """3 G steps at 2 D steps per G step: 6 batches, although Lightning's max_steps is 9."""
    cfg = add_callback(make_cfg("model.d_steps_per_g=2", "max_g_steps=3"), BarTotals)
    BarTotals.seen.clear()
    train(cfg)
    assert cfg.trainer.max_steps == 9 and BarTotals.seen == [6]


@pytest.mark.slow
def test_metrics_during_training(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """val/* every N generator steps and at the last; never inside training_step or a sanity check;
    best.ckpt at the best FID; the feature network stays out of checkpoints; the sweep metric returned."""
    calls: list[set[str]] = []
    original = SampleQuality.update

    def spy(self, features, logits, labels=None):
        calls.append({frame.function for frame in inspect.stack()})
        return original(self, features, logits, labels)

    monkeypatch.setattr(SampleQuality, "update", spy)
    cfg = make_cfg(
        "max_g_steps=5", "callbacks.sample_quality.every_n_g_steps=2", "trainer.num_sanity_val_steps=2"
    )
    returned = main(cfg)  # what Hydra (and so a sweeper) receives

    assert calls and not any({"training_step", "_run_sanity_check"} & stack for stack in calls)
    rows = [r for r in read_metrics(f"{cfg.paths.output_dir}/csv/metrics.csv") if r.get("val/fid")]
    assert [int(float(r["g_step"])) for r in rows] == [2, 4, 5]
    fids = [float(r["val/fid"]) for r in rows]
    assert [float(r["val/fid_best"]) for r in rows] == [min(fids[: i + 1]) for i in range(3)]
    assert {"val/classes_covered", "val/class_kl"} <= set(rows[0])
    assert cfg.optimized_metric == "val/fid_best" and returned == pytest.approx(min(fids))

    ckpts = Path(cfg.paths.output_dir, "checkpoints")
    best = load(ckpts / "best.ckpt")
    assert best["gan_steps"]["g_step"] == [2, 4, 5][fids.index(min(fids))]
    for ckpt in (best, load(ckpts / "last.ckpt")):
        prefixes = {key.split(".")[0] for key in ckpt["state_dict"]}
        assert prefixes == {"generator", "discriminator", "fixed_noise"}  # no feature network weights


class ScriptedQuality:
    """An evaluator whose val/fid values are given: where best.ckpt goes is then known in advance."""

    primary = "fid"
    protocol = "scripted"

    def __init__(self, values: list[float]) -> None:
        self.values = iter(values)

    def evaluate(self, module, device, rank, world_size) -> dict[str, float]:
        return {"fid": next(self.values)}


def scripted(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    evaluator = ScriptedQuality(values)
    monkeypatch.setattr("ganforge.callbacks.sample_quality.build_evaluator", lambda *args: evaluator)


@pytest.mark.slow
def test_best_checkpoint_follows_the_best_value_across_resumes(make_cfg, monkeypatch) -> None:
    """best.ckpt holds the state at the lowest val/fid; continuing in the same run directory keeps
    comparing with the earlier best, continuing into a new one starts that directory's own best.ckpt
    while val/fid_best still remembers the whole history."""
    every = "callbacks.sample_quality.every_n_g_steps=2"
    scripted(monkeypatch, [3.0, 1.0, 2.0])  # g_steps 2, 4, 6
    first = make_cfg("max_g_steps=6", every, run="first")
    _, where = train(first)
    best_path = Path(first.paths.output_dir, "checkpoints", "best.ckpt")
    assert load(best_path)["gan_steps"]["g_step"] == 4
    assert where["best checkpoint"] == f"{best_path} (val/fid 1 at g_step 4)"
    last = Path(first.paths.output_dir, "checkpoints", "last.ckpt")
    elsewhere = Path(first.paths.output_dir).parent / "last_of_first.ckpt"
    elsewhere.write_bytes(last.read_bytes())

    scripted(monkeypatch, [5.0, 4.0])  # g_steps 8, 10, in a new run directory
    second = make_cfg("max_g_steps=10", every, f"ckpt_path={elsewhere}", run="second")
    metrics, where = train(second)
    second_best = Path(second.paths.output_dir, "checkpoints", "best.ckpt")
    assert load(second_best)["gan_steps"]["g_step"] == 10
    assert where["best checkpoint"] == f"{second_best} (val/fid 4 at g_step 10)"
    assert metrics["val/fid_best"] == 1.0

    scripted(monkeypatch, [5.0, 4.0])  # the same again, continuing in the first run's directory
    again = make_cfg("max_g_steps=10", every, run="first")
    _, where = train(again)
    assert load(best_path)["gan_steps"]["g_step"] == 4  # neither 5 nor 4 beats the earlier 1
    assert where["best checkpoint"] == f"{best_path} (val/fid 1 at g_step 4)"


def test_lightning_messages_that_do_not_apply_are_not_shown(
    make_cfg, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """No 'val_dataloader but no validation_step' (evaluation is a callback), no torchdata deprecation
    and no product tips;
    the end-of-run list names the TensorBoard folder when that logger is on."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        # 5 batches an epoch, fewer than the logging interval (10): logging counts across epochs
        _, where = train(
            make_cfg(
                "logger=tensorboard",
                "metrics=none",
                "max_g_steps=2",
                "data.batch_size=256",
                "trainer.log_every_n_steps=10",
            )
        )
    printed = "".join(capfd.readouterr()) + caplog.text
    inapplicable = ("validation_step", "set_vital", "smaller than the logging interval")
    assert not [w for w in caught if any(text in str(w.message) for text in inapplicable)]
    assert "Tip:" not in printed and "GPU available" in printed  # Lightning's other messages still show
    assert where["TensorBoard"] == f"tensorboard --logdir {where['run directory']}/tensorboard/"


@pytest.mark.slow
def test_optional_kid_and_is_during_training(make_cfg) -> None:
    cfg = make_cfg(
        "metrics.kid=true",
        "metrics.kid_subset_size=50",
        "metrics.inception_score=true",
        "metrics.is_splits=2",
    )
    metrics, where = train(cfg)
    assert {"val/kid", "val/kid_std", "val/is", "val/is_std"} <= set(metrics)
    assert math.isfinite(metrics["val/kid"]) and metrics["val/is"] >= 1.0  # IS is at least 1 by definition
    header = read_metrics(where["metrics"])[0]
    assert {"val/kid", "val/is"} <= set(header)


def test_inception_without_weights_fails_before_training(make_cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", mock.Mock(side_effect=OSError("offline")))
    cfg = make_cfg("metrics=inception")
    with pytest.raises(
        GanforgeError, match=r"weights-inception-2015-12-05-6726825d.pth .* use metrics=classifier"
    ):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()


def test_resume_errors(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(GanforgeError, match=r"does not exist; pass a checkpoint file"):
        train(make_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(GanforgeError, match=r"was not written by ganforge"):
        train(make_cfg(f"ckpt_path={foreign}"))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(GanforgeError, match=r"is not a readable checkpoint"):
        train(make_cfg(f"ckpt_path={garbage}"))


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(make_cfg) -> None:
    first = make_cfg("max_g_steps=1", run="first")
    train(first)
    last = Path(first.paths.output_dir, "checkpoints", "last.ckpt")
    with pytest.raises(GanforgeError, match=r"different model.generator"):
        train(make_cfg("model.generator.base_channels=16", f"ckpt_path={last}", run="second"))


def test_no_budget_is_refused(make_cfg) -> None:
    with pytest.raises(GanforgeError, match=r"set max_g_steps .* or trainer.max_epochs"):
        train(make_cfg("max_g_steps=null"))


@pytest.mark.parametrize(
    ("model", "data", "missing"),
    [("r1_2d", "digits", "data.dim"), ("dcgan", "gaussians_grid", "data.channels, data.image_size")],
)
def test_a_model_on_the_wrong_kind_of_data_is_refused(make_cfg, model: str, data: str, missing: str) -> None:
    cfg = make_cfg(f"model={model}", f"data={data}", fast=False)
    with pytest.raises(GanforgeError, match=rf"this model reads {missing}, which .* data=gaussians_grid"):
        train(cfg)
    assert not Path(cfg.paths.output_dir, "checkpoints").exists()  # refused before anything was written


def test_invalid_d_steps_per_g(make_cfg) -> None:
    with pytest.raises(GanforgeError, match=r"model.d_steps_per_g=0 must be a whole number >= 1"):
        train(make_cfg("model.d_steps_per_g=0"))


def test_a_run_without_loggers_trains(make_cfg) -> None:
    """`~logger`: nothing to log learning rates to, so LearningRateMonitor (which would refuse) stays out."""
    metrics, _ = train(make_cfg("~logger", "max_g_steps=2", "metrics=none"))
    assert metrics["g_step"] == 2
