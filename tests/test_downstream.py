"""The downstream strategies: each one's rows, the confidence filter, the weighted loss at lambda = 0,
the two phases of pre-training, and the settings refused before anything trains."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from ganforge.augment import augment, training_tensors
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.downstream import Downstream, confidences, confident
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import SmallCNN
from tests.test_augment import augment_cfg, write_digits

CLASSIFIER = {"width": 8, "feature_dim": 16, "steps": 6, "lr": 1e-3, "batch_size": 32}


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    data = DigitsDataModule(image_size=16, train_fraction=0.1)
    data.setup()
    return data


def experiment(digits: DigitsDataModule, steps: int = 6) -> Downstream:
    real = training_tensors(digits.data_train)
    fake = real[0].flip(-1), real[1]  # mirrored real images: a 'synthetic' set of the right format
    return Downstream(
        real, {"none": fake}, digits.data_test, 10, CLASSIFIER | {"steps": steps}, torch.device("cpu")
    )


@pytest.mark.slow
def test_every_strategy_reports_its_rows(tmp_path: Path) -> None:
    folder = write_digits(tmp_path / "synthetic", shuffle_labels=False)
    cfg = augment_cfg(
        tmp_path, "data.train_fraction=0.1", f"synthetic_dir={folder}", "seeds=[0,1]", "ratios=[1]",
        "weights=[0,0.5]", "classifier.steps=3", "wandb.enabled=false", "filter_threshold=0.5",
    )  # fmt: skip
    summary = augment(cfg, tmp_path / "out")
    rows = [
        (r["strategy"], r["setting"], r["real images"], r["synthetic images"], r["seeds"]) for r in summary
    ]
    assert rows[:4] == [
        ("real", "real", 160, 0, 2),
        ("real_augmented", "real + augmentation", 160, 0, 2),
        ("mixed", "real + synthetic x1", 160, 160, 2),
        ("mixed_augmented", "real + synthetic x1 + augmentation", 160, 160, 2),
    ]
    assert rows[4][:3] == ("filtered", "real + filtered synthetic (p >= 0.5) x1", 160)
    assert 0 <= rows[4][3] <= 160  # as many as passed a 3-step classifier, at most the ratio's
    assert rows[5:] == [
        ("weighted", "real + 0 x synthetic loss", 160, 1437, 2),
        ("weighted", "real + 0.5 x synthetic loss", 160, 1437, 2),
        ("pretrained", "synthetic (50% of steps) then real", 160, 1437, 2),
        ("synthetic_only", "synthetic only (CAS)", 0, 1437, 2),
    ]


class KnownConfidence(nn.Module):
    """A 'classifier' whose probability for class 0 is the image's first pixel / 255."""

    def forward(self, x: Tensor) -> Tensor:
        p = (x[:, 0, 0, 0] + 1) / 2  # back from [-1, 1]
        return torch.stack([p, 1 - p], 1).log()  # log 0 = -inf: probabilities exactly 0 and 1


def test_the_filter_keeps_exactly_the_samples_at_or_above_tau() -> None:
    pixel = torch.tensor([0, 51, 127, 128, 204, 229, 230, 255], dtype=torch.uint8)
    images = pixel.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    labels = torch.zeros(len(pixel), dtype=torch.long)
    probs = confidences(KnownConfidence(), (images, labels), torch.device("cpu"), batch_size=3)
    assert torch.allclose(probs, pixel / 255, atol=1e-5)
    kept, kept_labels = confident(KnownConfidence(), (images, labels), 0.9, torch.device("cpu"))
    assert kept[:, 0, 0, 0].tolist() == [230, 255] and len(kept_labels) == 2  # 229/255 < 0.9 <= 230/255
    assert len(confident(KnownConfidence(), (images, labels), 0.0, torch.device("cpu"))[1]) == 8
    assert len(confident(KnownConfidence(), (images, labels), 1.0, torch.device("cpu"))[1]) == 1


def test_the_weighted_loss_at_lambda_zero_is_real_only_training(digits: DigitsDataModule) -> None:
    run = experiment(digits)
    plain = run.fit(0, run.real).state_dict()
    weighted = run.fit(0, run.real, weighted=(run.synthetic["none"], 0.0)).state_dict()
    assert all(torch.equal(plain[k], weighted[k]) for k in plain)  # batch-norm statistics included
    moved = run.fit(0, run.real, weighted=(run.synthetic["none"], 0.5)).state_dict()
    assert not all(torch.equal(plain[k], moved[k]) for k in plain)


def test_pretraining_runs_a_synthetic_phase_then_a_real_one(
    digits: DigitsDataModule, caplog: pytest.LogCaptureFixture
) -> None:
    run = experiment(digits, steps=10)
    with caplog.at_level(logging.INFO, logger="ganforge.metrics.classifier"):
        (row,) = run.rows("pretrained", 0, {"pretrain_fraction": 0.3}, None, run.synthetic["none"])
    phases = [m for m in caplog.messages if m.startswith("classifier trained")]
    assert [re.match(r"classifier trained: (\d+) steps on (\d+) images", m).groups() for m in phases] == [
        ("3", "160"),  # synthetic first: 30% of the 10 steps
        ("7", "160"),  # then the real images, the same model
    ]
    assert row[0] == "synthetic (30% of steps) then real"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("filter_threshold=1.5", "filter_threshold is a probability in [0, 1] (e.g. 0.9), got 1.5"),
        ("filter_threshold=-0.1", "filter_threshold is a probability in [0, 1] (e.g. 0.9), got -0.1"),
        ("weights=[-1]", "weights are the synthetic loss's weight and must be >= 0"),
        ("pretrain_fraction=1", "pretrain_fraction is the share of steps on synthetic images, in (0, 1)"),
        ("strategies=[mixd]", "strategies=['mixd']: choose from real, real_augmented, mixed"),
        ("classifier.image_size=4", "classifier.image_size is the classifier's input size in pixels, >= 8"),
        ("classifier.image_size=true", "or null for the data's size; got True"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(GanforgeError, match=re.escape(message)):
        augment(augment_cfg(tmp_path, override, "wandb.enabled=false"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_deprecated_synthetic_only_key_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = augment_cfg(
        tmp_path, "synthetic_only=false", "wandb.enabled=false", "classifier.steps=1", "seeds=[0]"
    )
    with caplog.at_level(logging.WARNING):
        summary = augment(cfg, tmp_path / "out")
    assert "synthetic_only is deprecated" in caplog.text
    assert [r["strategy"] for r in summary] == ["real", "real_augmented"]  # no synthetic_dir: real only


def test_a_smaller_classifier_input_resizes_real_synthetic_and_test_images(tmp_path: Path) -> None:
    folder = write_digits(tmp_path / "synthetic", shuffle_labels=False)  # 16x16, as the data
    cfg = augment_cfg(
        tmp_path, f"synthetic_dir={folder}", "strategies=[real,mixed]", "ratios=[1]", "seeds=[0]",
        "classifier.steps=1", "classifier.image_size=8", "wandb.enabled=false",
    )  # fmt: skip
    seen = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if isinstance(module, SmallCNN):
            seen.append(tuple(args[0].shape[2:]))

    hook = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        augment(cfg, tmp_path / "out")
    finally:
        hook.remove()
    assert set(seen) == {(8, 8)}  # every training and test batch, real and synthetic
