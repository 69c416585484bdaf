"""The real-only long-tail baselines match hand-computed values (class weights, sampling
frequencies, adjusted logits, recalls), and augment.py runs them on a long-tailed set, reporting
balanced accuracy and the rare classes' recall; their settings' mistakes are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ganforge.augment import augment
from ganforge.class_balance import (
    Balancing,
    effective_number_weights,
    logit_adjustments,
    per_class_recall,
    rare_classes,
    resampling_weights,
)
from ganforge.config import instantiate
from ganforge.downstream import fill_up
from ganforge.metrics.classifier import _batches, _loss
from tests.test_augment import augment_cfg, write_digits
from tests.test_datamodules import user_error


def test_effective_number_weights_by_hand() -> None:
    # (1 - 0.9) / (1 - 0.9^100) and (1 - 0.9) / (1 - 0.9^10), scaled to sum to 2
    weights = effective_number_weights(torch.tensor([100, 10]), beta=0.9)
    torch.testing.assert_close(weights, torch.tensor([0.788862, 1.211138]))
    assert torch.equal(effective_number_weights(torch.tensor([100, 10]), beta=0.0), torch.tensor([1.0, 1.0]))
    assert effective_number_weights(torch.tensor([5, 0, 5]), beta=0.9).tolist() == [1.5, 0.0, 1.5]


def test_resampling_draws_every_class_equally_often() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    weights = resampling_weights(labels, 2)
    torch.testing.assert_close(weights, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=torch.float64))
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 1), labels)
    drawn = torch.cat([y for epoch in range(500) for _, y in _batches(dataset, 4, True, epoch, weights)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.03  # class 1 is a quarter of the set, half the draws


def test_logit_adjustment_by_hand() -> None:
    offsets = logit_adjustments(torch.tensor([3, 1]), tau=1.0)
    torch.testing.assert_close(offsets, torch.tensor([-0.287682, -1.386294]))
    assert torch.equal(logit_adjustments(torch.tensor([3, 1]), tau=0.0), torch.zeros(2))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    images, labels = torch.randint(0, 256, (6, 1, 2, 2), dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 1, 0])
    weights = torch.tensor([0.5, 2.0])
    loss, correct = _loss(model, images, labels, torch.device("cpu"), None, Balancing(weights, offsets))
    logits = model(images.float() / 127.5 - 1)
    expected = nn.functional.cross_entropy(logits + offsets, labels, weight=weights)
    torch.testing.assert_close(loss, expected)
    assert correct == (logits.argmax(1) == labels).sum()  # predictions from the plain logits


def test_recalls_and_rare_classes_by_hand() -> None:
    predicted, labels = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0])
    assert per_class_recall(predicted, labels, 3).tolist() == [0.5, 0.5, 1.0]
    assert rare_classes(torch.tensor([100, 50, 10, 10])) == [2, 3]
    assert rare_classes(torch.tensor([10, 10, 50])) == [1]  # the tie goes to the higher index
    assert rare_classes(torch.tensor([7, 7, 7])) == []


IMBALANCE = "[real,reweighted,resampled_augmented,logit_adjusted]"


def test_augment_runs_the_long_tail_baselines(tmp_path: Path) -> None:
    cfg = augment_cfg(
        tmp_path, "data.long_tail.ratio=10", "data.train_fraction=1.0", f"strategies={IMBALANCE}",
        "seeds=[0]", "classifier.steps=30", "wandb.enabled=false",
    )  # fmt: skip
    summary = augment(cfg, tmp_path / "out")
    assert [r["setting"] for r in summary] == [
        "real", "real, re-weighted", "real, re-sampled + augmentation", "real, logit-adjusted",
    ]  # fmt: skip
    for row in summary:
        assert 0 <= row["balanced accuracy"] <= 1 and 0 <= row["rare-class recall"] <= 1
    assert len({round(r["mean"], 6) for r in summary}) > 1  # the methods train differently
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert header.endswith("test accuracy,balanced accuracy,rare-class recall,synthetic filter")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("class_balance_beta=1.0", r"^class_balance_beta is in \[0, 1\) .*got 1.0$"),
        ("logit_adjustment_tau=-1", r"^logit_adjustment_tau must be >= 0 \(e.g. 1\), got -1$"),
    ],
)
def test_long_tail_settings_mistakes_are_one_line(tmp_path: Path, setting: str, message: str) -> None:
    cfg = augment_cfg(tmp_path, setting, f"strategies={IMBALANCE}", "wandb.enabled=false")
    with user_error(message):
        augment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fill_up_tops_each_class_up_to_the_target_by_hand() -> None:
    real = torch.tensor([0, 0, 0, 0, 1, 2])  # counts 4, 1, 1
    pool = (torch.arange(7).view(7, 1, 1, 1).to(torch.uint8), torch.tensor([1, 1, 1, 1, 1, 2, 2]))
    images, labels = fill_up(real, pool, 0.75, seed=0, num_classes=3)  # goal round(0.75 * 4) = 3
    assert labels.bincount(minlength=3).tolist() == [0, 2, 2]
    assert set(images.flatten().tolist()) <= {0, 1, 2, 3, 4} | {5, 6} and {5, 6} <= set(
        images.flatten().tolist()
    )
    again = fill_up(real, pool, 0.75, seed=0, num_classes=3)
    assert torch.equal(again[0], images)  # seeded
    with user_error(
        r"^filling class 2 to 4 images \(fill_target=1\) needs 3 synthetic images of it, the synthetic set"
    ):
        fill_up(real, pool, 1.0, seed=0, num_classes=3)


def test_augment_fills_the_rare_classes(tmp_path: Path) -> None:
    folder = write_digits(tmp_path / "synthetic", shuffle_labels=False)  # real digits as the synthetic set
    cfg = augment_cfg(
        tmp_path, "data.long_tail.ratio=4", "data.train_fraction=1.0", f"synthetic_dir={folder}",
        "strategies=[filled,filled_augmented]", "fill_target=0.5", "fill_balancing=logit_adjusted",
        "seeds=[0]", "classifier.steps=20", "wandb.enabled=false",
    )  # fmt: skip
    summary = augment(cfg, tmp_path / "out")
    counts = torch.tensor(instantiate_counts(cfg))
    need = (round(0.5 * int(counts.max())) - counts).clamp(min=0).sum().item()
    assert [(r["setting"], r["synthetic images"]) for r in summary] == [
        ("real + synthetic fill to 0.5 x n_max, logit-adjusted", need),
        ("real + synthetic fill to 0.5 x n_max, logit-adjusted + augmentation", need),
    ]


def instantiate_counts(cfg) -> list[int]:
    data = instantiate(cfg.data)
    data.setup()
    return data.train_class_counts


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("fill_target=0", r"^fill_target is a share of the largest class's count, in \(0, 1\] .*got 0$"),
        ("fill_target=1.5", r"^fill_target is a share .*got 1.5$"),
        (
            "fill_balancing=focal",
            r"^fill_balancing must be null or one of reweighted, resampled, logit_adjusted",
        ),
    ],
)
def test_fill_settings_mistakes_are_one_line(tmp_path: Path, setting: str, message: str) -> None:
    cfg = augment_cfg(tmp_path, setting, "strategies=[filled]", "wandb.enabled=false")
    with user_error(message):
        augment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_fill_larger_than_the_export_is_refused_before_training(tmp_path: Path) -> None:
    for c in range(10):  # 2 synthetic images per class
        for i in range(2):
            (tmp_path / "synthetic" / str(c)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 20 * c, np.uint8)).save(
                tmp_path / "synthetic" / str(c) / f"{i}.png"
            )
    cfg = augment_cfg(
        tmp_path, "data.long_tail.ratio=10", "data.train_fraction=1.0",
        f"synthetic_dir={tmp_path / 'synthetic'}", "strategies=[real,filled]", "wandb.enabled=false",
    )  # fmt: skip
    with user_error(
        r"^filling class 1 to \d+ images \(fill_target=1\) needs \d+ synthetic images of it, the "
        r"synthetic set has 2; export more"
    ):
        augment(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
