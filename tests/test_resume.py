"""Resuming with other settings: each difference from the checkpoint is applied, refused or warned
about in one line (ganforge.resume), and the step counters stay right."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.train import train
from tests.conftest import FAST, SMALL_NETWORKS, compose_train

LOADS = {"map_location": "cpu", "weights_only": True}
FIRST = 4  # generator steps of the checkpoint every test resumes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("first")
    train(resumed(root, cache_dir, f"max_g_steps={FIRST}", run="first"))
    return root / "first" / "checkpoints" / "last.ckpt"


def resumed(root: Path, cache_dir: Path, *overrides: str, run: str = "resumed"):
    paths = [f"paths.log_dir={root / 'logs'}", f"paths.cache_dir={cache_dir}"]
    base = [*paths, *FAST, *SMALL_NETWORKS["mlp"], "model=mlp", "metrics=none"]
    return compose_train([*base, *overrides], output_dir=root / run)


def resume(tmp_path: Path, cache_dir: Path, checkpoint: Path, *overrides: str) -> dict:
    cfg = resumed(tmp_path, cache_dir, f"ckpt_path={checkpoint}", *overrides)
    train(cfg)
    return torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", **LOADS)


def group_values(state: dict, key: str) -> list:
    return [group[key] for optimizer in state["optimizer_states"] for group in optimizer["param_groups"]]


@pytest.mark.slow
def test_a_new_learning_rate_and_betas_are_applied_to_the_restored_optimizers(
    tmp_path: Path, cache_dir: Path, checkpoint: Path, caplog
) -> None:
    """The restored optimizer states carry the old settings and would win (README's advice to resume
    a diverged run with a lower learning rate did nothing)."""
    overrides = [
        "model.optimizer_g.lr=1e-5",
        "model.optimizer_d.lr=3e-5",
        "model.optimizer_d.betas=[0.0,0.99]",
    ]
    with caplog.at_level(logging.INFO, logger="ganforge.resume"):
        state = resume(tmp_path, cache_dir, checkpoint, f"max_g_steps={FIRST + 2}", *overrides)
    assert group_values(state, "lr") == [1e-5, 3e-5]
    assert group_values(state, "betas") == [(0.5, 0.999), (0.0, 0.99)]
    assert state["gan_steps"]["g_step"] == FIRST + 2
    (applied,) = [r.getMessage() for r in caplog.records if "applied" in r.getMessage()]
    assert f"applied from g_step {FIRST}: model.optimizer_g.lr 0.0002 -> 1e-05" in applied


def test_a_new_learning_rate_under_a_scheduler_keeps_the_factor_reached() -> None:
    from ganforge.resume import apply_optimizer_settings

    schedule = torch.optim.lr_scheduler.LinearLR
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(params, lr=0.1)
    scheduler = schedule(optimizer, start_factor=1.0, end_factor=0.0, total_iters=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = {"optimizer_states": [optimizer.state_dict()], "lr_schedulers": [scheduler.state_dict()]}
    new_lr = functools.partial(torch.optim.Adam, lr=0.01)
    new_schedule = functools.partial(schedule, start_factor=1.0, end_factor=0.0, total_iters=20)
    apply_optimizer_settings(state, [new_lr], [new_schedule])
    optimizer.load_state_dict(state["optimizer_states"][0])
    scheduler.load_state_dict(state["lr_schedulers"][0])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # half-way down from the new base
    assert scheduler.base_lrs == [0.01] and scheduler.total_iters == 20


@pytest.mark.slow
def test_another_d_steps_per_g_on_resume_ends_at_the_budget_in_generator_steps(
    tmp_path: Path, cache_dir: Path, checkpoint: Path
) -> None:
    """Lightning's budget counts optimizer steps; one derived for the new ratio alone overshot (a
    resume of a 15-step run at d_steps_per_g=5 ended at g_step 50 for max_g_steps=40)."""
    state = resume(tmp_path, cache_dir, checkpoint, f"max_g_steps={FIRST + 3}", "model.d_steps_per_g=3")
    # generator steps follow the discriminator steps that are multiples of 3: 6, 9 and 12
    assert state["gan_steps"] == {"g_step": FIRST + 3, "d_step": 12}


@pytest.mark.slow
@pytest.mark.parametrize("ema", ["added", "dropped"])
def test_an_ema_added_or_dropped_on_resume_trains_on(
    tmp_path: Path, cache_dir: Path, checkpoint: Path, ema: str, caplog
) -> None:
    base = checkpoint
    if ema == "dropped":
        train(resumed(tmp_path, cache_dir, f"ckpt_path={checkpoint}", f"max_g_steps={FIRST + 1}",
                      "model.ema_decay=0.5", run="with_ema"))  # fmt: skip
        base = tmp_path / "with_ema" / "checkpoints" / "last.ckpt"
        assert "generator_ema.n_averaged" in torch.load(base, **LOADS)["state_dict"]
    with caplog.at_level(logging.INFO, logger="ganforge.resume"):
        decay = ["model.ema_decay=0.5"] if ema == "added" else []
        state = resume(tmp_path, cache_dir, base, f"max_g_steps={FIRST + 3}", *decay)["state_dict"]
    if ema == "added":
        assert int(state["generator_ema.n_averaged"]) == 3  # averaged since the resume, from G's weights
        assert "the EMA starts from the generator" in caplog.text
    else:
        assert not [k for k in state if k.startswith("generator_ema.")]
        assert "model.ema_decay 0.5 -> None" in caplog.text


@pytest.mark.slow
def test_settings_that_change_the_run_are_warned_about(
    tmp_path: Path, cache_dir: Path, checkpoint: Path, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="ganforge.resume"):
        resume(tmp_path, cache_dir, checkpoint, f"max_g_steps={FIRST + 1}", "model/loss=hinge",
               "data.batch_size=8", "model.compile=false")  # fmt: skip
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"resuming with settings that change the run from g_step {FIRST}: ")
    assert "model.loss._target_ 'ganforge.losses.NonSaturatingLoss' -> 'ganforge.losses.HingeLoss'" in warning
    assert "data.batch_size 16 -> 8" in warning


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data=mnist"], r"was trained on other data \(data._target_ .*\); resume on the checkpoint's "
         r"data \(data=digits\), or start a new run without ckpt_path"),
        (["data.train_fraction=0.5"],
         r"other data \(data.train_fraction 1.0 -> 0.5\); .*data.train_fraction=1.0"),
        ([f"max_g_steps={FIRST}"],
         rf"has trained {FIRST} generator steps already, max_g_steps={FIRST}: nothing to train; pass "
         rf"max_g_steps above {FIRST} to continue it"),
        (["model.optimizer_g._target_=torch.optim.SGD"], r"trained with model.optimizer_g=torch.optim.Adam, "
         r"not torch.optim.SGD"),
    ],
    ids=["another data set", "another train_fraction", "a budget reached", "another optimizer"],
)  # fmt: skip
def test_what_cannot_continue_is_refused_in_one_line(
    tmp_path: Path, cache_dir: Path, checkpoint: Path, overrides: list[str], message: str
) -> None:
    cfg = resumed(tmp_path, cache_dir, f"ckpt_path={checkpoint}", f"max_g_steps={FIRST + 1}", *overrides)
    with pytest.raises(GanforgeError, match=message):
        train(cfg)
    assert not (tmp_path / "resumed" / "checkpoints").exists()
