"""`data.long_tail`: long-tailed training splits with exactly the requested per-class counts, seeded,
validation and test left as drawn, the counts recorded with the run; mistakes in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ganforge.config import instantiate
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.datamodules.long_tail import LongTail
from ganforge.train import train
from tests.test_datamodules import user_error


def digits(**long_tail: Any) -> DigitsDataModule:
    dm = DigitsDataModule(long_tail=long_tail or None)
    dm.setup()
    return dm


@pytest.mark.parametrize(
    ("tail", "available", "expected"),
    [
        # n_max * 100^(-i/9), floored (Cui et al. 2019's CIFAR-LT recipe)
        (LongTail(100), [1000] * 10, [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]),
        # n_max: the smallest class's count unless given
        (LongTail(10), [50, 40, 60], [40, 12, 4]),
        (LongTail(10, max_per_class=30), [50, 40, 60], [30, 9, 3]),
        # step (Buda et al. 2018): the second half of the classes rare; the odd class out is a head class
        (LongTail(100, "step"), [500] * 10, [500] * 5 + [5] * 5),
        (LongTail(4, "step"), [80, 90, 100], [80, 80, 20]),
        (LongTail(1), [7, 9], [7, 7]),
    ],
)
def test_per_class_counts_follow_the_profile(
    tail: LongTail, available: list[int], expected: list[int]
) -> None:
    assert tail.counts(available) == expected


def test_the_split_has_exactly_those_counts_seeded_with_validation_and_test_as_drawn() -> None:
    full = digits()
    tail = digits(ratio=10)
    labels = full.data_train.tensors[1]
    expected = LongTail(10).counts(labels.bincount().tolist())
    assert tail.data_train.tensors[1].bincount().tolist() == expected == tail.train_class_counts
    kept = {tuple(x.flatten().tolist()) for x in tail.data_train.tensors[0]}
    assert kept <= {tuple(x.flatten().tolist()) for x in full.data_train.tensors[0]}
    for split in ("data_val", "data_test"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(getattr(tail, split).tensors, getattr(full, split).tensors, strict=True)
        )
    again = digits(ratio=10)
    other = DigitsDataModule(long_tail={"ratio": 10}, train_fraction_seed=1)
    other.setup()
    assert torch.equal(again.data_train.tensors[0], tail.data_train.tensors[0])  # seeded
    assert not torch.equal(other.data_train.tensors[0], tail.data_train.tensors[0])
    assert other.data_train.tensors[1].bincount().tolist() == expected  # the same counts, other images


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ratio": 0.5}, r"data.long_tail.ratio must be >= 1 \(.*\), got 0.5$"),
        (
            {"ratio": 10, "profile": "linear"},
            r"data.long_tail.profile must be one of exponential, step, got 'linear'$",
        ),
        (
            {"ratio": 10, "rate": 2},
            r"data.long_tail has no setting rate; it takes ratio, profile and max_per_class$",
        ),
        ({"ratio": 10, "max_per_class": 0}, r"data.long_tail.max_per_class must be >= 1 or null, got 0$"),
        (
            {"ratio": 10_000},
            r"data.long_tail.ratio=10000 leaves no image of class 9 \(n_max=\d+\); lower the ratio",
        ),
        (
            {"ratio": 10, "max_per_class": 500},
            r"keeps 500 images of class 0, the training split has \d+; lower",
        ),
    ],
)
def test_long_tail_mistakes_are_one_line(settings: dict[str, Any], message: str) -> None:
    with user_error(message):
        digits(**settings)


def test_long_tail_with_a_scarce_data_setting_is_refused() -> None:
    with user_error(r"data.long_tail with data.train_per_class or data.train_fraction: set one of them"):
        DigitsDataModule(long_tail={"ratio": 10}, train_per_class=5)


def test_an_unlabelled_folder_cannot_be_long_tailed(tmp_path: Path) -> None:
    from tests.test_datamodules import RED, folder_module, solid, write_image

    for i in range(6):
        write_image(tmp_path / "flat" / f"{i}.png", solid(RED))
    with user_error(r"data.long_tail needs class labels; imagefolder has none$"):
        folder_module(tmp_path / "flat", long_tail={"ratio": 10})


def test_the_counts_are_recorded_with_the_run(make_cfg) -> None:
    cfg = make_cfg("data.long_tail.ratio=5", "metrics=none", "max_g_steps=2")
    train(cfg)
    (hparams,) = Path(cfg.paths.output_dir).rglob("hparams.yaml")
    recorded = yaml.safe_load(hparams.read_text())
    data = instantiate(cfg.data)
    data.setup()
    assert recorded["data/train_class_counts"] == data.train_class_counts
    assert data.train_class_counts[0] > 4 * data.train_class_counts[-1]
    assert recorded["data"]["long_tail"] == {"ratio": 5, "profile": "exponential", "max_per_class": None}
