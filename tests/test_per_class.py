"""The GAN's quality per class, on samples whose quality is known: real images (FID near 0, the
judge's own accuracy), real images with wrong labels, and a DRS mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganforge.augment import training_tensors
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.metrics.features import classifier_features
from ganforge.metrics.per_class import per_class_quality
from tests.test_metrics import SETTINGS

JUDGE = SETTINGS | {"epochs": 15}


def test_per_class_quality_on_samples_of_known_quality(tmp_path: Path) -> None:
    data = DigitsDataModule(image_size=16, long_tail={"ratio": 10})
    data.setup()
    judge = classifier_features(data, JUDGE, str(tmp_path), torch.device("cpu"))  # 98% test accuracy
    test_images, test_labels = training_tensors(data.data_test)
    # 'synthetic': the validation images (other real images of the same classes); class 9's labelled 8
    images, labels = training_tensors(data.data_val)
    wrong = labels.clone()
    wrong[labels == 9] = 8
    kept = labels % 2 == 0  # a "DRS" mask that keeps the even classes' samples only
    train_labels = data.data_train.tensors[1]
    rows, summary = per_class_quality(
        judge, (images, wrong), (test_images, test_labels), train_labels, 10, torch.device("cpu"), kept
    )
    assert [r["class"] for r in rows] == list(range(10))
    assert [r["real training images"] for r in rows] == train_labels.bincount().tolist()
    assert rows[0]["real training images"] >= 9 * rows[9]["real training images"]
    good = [r for r in rows if r["class"] not in (8, 9)]
    assert all(r["class accuracy"] > 0.9 for r in good)  # the judge on real images of the class
    assert rows[9]["samples"] == 0 and rows[9]["class accuracy"] != rows[9]["class accuracy"]  # nan
    assert rows[8]["class accuracy"] < 0.7  # half of "class 8" are nines
    # FID in the judge's features: real images of the class are close, a mixture of two classes is not
    assert max(r["fid"] for r in good) < rows[8]["fid"]
    assert rows[2]["samples after DRS"] == rows[2]["samples"] and rows[3]["samples after DRS"] == 0
    assert rows[2]["class accuracy after DRS"] == rows[2]["class accuracy"]
    assert set(summary) == {
        "rare class accuracy", "rare fid", "head class accuracy", "head fid",
        "rare class accuracy after DRS", "rare fid after DRS", "head class accuracy after DRS",
        "head fid after DRS",
    }  # fmt: skip
    # rare: the rarer half of the classes in training (5..9), which hold the mislabelled nines
    assert summary["rare class accuracy"] < summary["head class accuracy"]


def test_a_balanced_training_set_has_no_rare_summary(tmp_path: Path) -> None:
    data = DigitsDataModule(image_size=16)
    data.setup()
    judge = classifier_features(data, JUDGE, str(tmp_path), torch.device("cpu"))
    images, labels = training_tensors(data.data_val)
    balanced = torch.arange(10).repeat(20)
    rows, summary = per_class_quality(
        judge, (images, labels), training_tensors(data.data_test), balanced, 10, torch.device("cpu")
    )
    assert len(rows) == 10 and summary == {} and "fid after DRS" not in rows[0]
    assert rows[0]["class accuracy"] == pytest.approx(
        (judge(images[labels == 0].float() / 127.5 - 1)[1].argmax(1) == 0).double().mean().item()
    )
