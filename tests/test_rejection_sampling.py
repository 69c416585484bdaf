"""Discriminator rejection sampling: the acceptance rule on known scores, the scores an export keeps,
the DRS rows of augment.py, and the mistakes it refuses before training anything."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from ganforge.augment import augment
from ganforge.checkpoint import load_checkpoint, load_model
from ganforge.datamodules.base import to_signed_unit
from ganforge.errors import GanforgeError
from ganforge.generate import export_checkpoint
from ganforge.rejection_sampling import acceptance, rejection_sample
from ganforge.synthetic_dataset import load, load_scores
from tests.conftest import trained
from tests.test_augment import EXPORT, augment_cfg, write_digits


def test_acceptance_matches_the_hand_computed_rule() -> None:
    # logits 2 and 0: D* = 2; F = D - D* - log(1 - exp(D - D* - 1e-6)):
    # F(2) = -log(1 - exp(-1e-6)) = 13.81551, F(0) = -2 - log(1 - exp(-2)) = -1.85459
    # gamma at the 50th percentile: their midpoint 5.98046; p = sigmoid(F - gamma) = 0.999604, 0.000396
    p = acceptance(torch.tensor([2.0, 0.0]), 50)
    assert p.tolist() == pytest.approx([0.999604, 0.000396], abs=2e-6)
    # at the 100th percentile gamma is F's largest value: the best sample is a coin flip
    assert acceptance(torch.tensor([2.0, 0.0]), 100)[0].item() == pytest.approx(0.5)


def drs_by_hand(logits: list[float], labels: list[int], percentile: float, seed: int) -> list[bool]:
    """The acceptance rule written out in plain Python, class by class."""
    draws = torch.rand(len(logits), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    keep = [False] * len(logits)
    for c in set(labels):
        members = [i for i, y in enumerate(labels) if y == c]
        top = max(logits[i] for i in members)
        f = {i: logits[i] - top - math.log(1 - math.exp(logits[i] - top - 1e-6)) for i in members}
        ranked = sorted(f.values())  # linear interpolation between order statistics (numpy's default)
        position = percentile / 100 * (len(ranked) - 1)
        low = math.floor(position)
        gamma = ranked[low] + (position - low) * (ranked[min(low + 1, len(ranked) - 1)] - ranked[low])
        for i in members:
            keep[i] = draws[i].item() <= 1 / (1 + math.exp(-(f[i] - gamma)))
    return keep


def test_drs_keeps_exactly_the_samples_its_acceptance_rule_accepts() -> None:
    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(3).repeat_interleave(200)
    logits = torch.randn(600, generator=generator) * 2 + labels * 10.0  # classes on other scales
    for percentile in (20, 50, 90):
        mask = rejection_sample(logits, labels, percentile, seed=3)
        assert mask.tolist() == drs_by_hand(logits.tolist(), labels.tolist(), percentile, seed=3)
    shares = [rejection_sample(logits, labels, p, seed=3).double().mean().item() for p in (20, 50, 90)]
    assert shares[0] > shares[1] > shares[2] > 0  # a higher percentile keeps fewer
    kept = rejection_sample(logits, labels, 50, seed=3)
    per_class = kept.view(3, 200).double().mean(1)
    assert per_class.max() - per_class.min() < 0.15  # each class on its own scale: similar shares
    assert not torch.equal(kept, rejection_sample(logits, labels, 50, seed=4))  # the draws are seeded


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    return trained(tmp_path_factory.mktemp("drs"), cache_dir, "model=cdcgan")


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_an_export_keeps_the_discriminators_logit_of_each_sample_in_load_order(
    checkpoint: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / fmt
    export_checkpoint(checkpoint, out, EXPORT | {"format": fmt, "num_samples": 30}, False, "cpu")
    images, labels, _ = load(out)
    scores = load_scores(out)
    model = load_model(load_checkpoint(checkpoint), torch.device("cpu"), checkpoint).eval()
    with torch.no_grad():
        again = model.discriminate(to_signed_unit(images), labels, augment=False).flatten()
    assert scores.shape == (30,) and torch.allclose(scores, again, atol=1e-5)
    assert scores.std() > 0


@pytest.mark.slow
def test_augment_runs_each_synthetic_strategy_on_all_and_on_the_drs_kept_samples(
    checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "synthetic"
    export_checkpoint(checkpoint, folder, EXPORT, False, "cpu")
    cfg = augment_cfg(
        tmp_path, f"synthetic_dir={folder}", "seeds=[0]", "classifier.steps=2", "wandb.enabled=false",
        "strategies=[real,synthetic_only]", "synthetic_filters=[none,drs]", "drs_percentile=80",
    )  # fmt: skip
    summary = augment(cfg, tmp_path / "out")
    _, labels, _ = load(folder)
    kept = rejection_sample(load_scores(folder), labels, 80, seed=0)
    assert [(r["setting"], r["synthetic images"]) for r in summary] == [
        ("real", 0),
        ("synthetic only (CAS)", 400),
        ("synthetic only (CAS) (DRS)", int(kept.sum())),
    ]
    assert 0 < kept.sum() < 300


def test_drs_mistakes_are_one_line_and_write_nothing(
    checkpoint: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> None:
    export = tmp_path / "export"
    export_checkpoint(checkpoint, export, EXPORT, False, "cpu")
    unscored = write_digits(tmp_path / "folder", shuffle_labels=False)  # image folders have no scores
    hinge_ckpt = trained(tmp_path_factory.mktemp("hinge"), cache_dir, "model=cdcgan", "model/loss=hinge")
    hinge = tmp_path / "hinge"
    export_checkpoint(hinge_ckpt, hinge, EXPORT, False, "cpu")
    cases = [
        (
            [f"synthetic_dir={unscored}"],
            f"synthetic_dir={unscored} holds no discriminator scores (exported before generate.py wrote "
            "them, or not by generate.py); export it again with generate.py, or set synthetic_filters=[none]",
        ),
        (
            [f"synthetic_dir={hinge}"],
            f"synthetic_dir={hinge}: DRS reads the discriminator's logit as log p_data / p_G, which only the "
            "logistic loss trains (this GAN's was HingeLoss); export from a GAN trained with "
            "model/loss=non_saturating, or remove drs from synthetic_filters",
        ),
        ([f"synthetic_dir={export}", "drs_percentile=101"], "drs_percentile is a percentile in [0, 100]"),
        ([f"synthetic_dir={export}", "synthetic_filters=[drs,drs]"], "synthetic_filters=['drs', 'drs']: "),
        ([f"synthetic_dir={export}", "synthetic_filters=[best]"], "synthetic_filters=['best']: list each of"),
    ]  # fmt: skip
    for overrides, message in cases:
        out = tmp_path / "out"
        cfg = augment_cfg(tmp_path, "synthetic_filters=[none,drs]", "wandb.enabled=false", *overrides)
        with pytest.raises(GanforgeError, match="^" + re.escape(message)) as error:
            augment(cfg, out)
        assert "\n" not in str(error.value)
        assert not out.exists()
    # a fill the 40 samples per class can give, DRS's share of them cannot
    with pytest.raises(GanforgeError, match=r"the synthetic set after DRS \(lower drs_percentile=95 to keep"):
        augment(
            augment_cfg(
                tmp_path, f"synthetic_dir={export}", "strategies=[filled]", "fill_target=0.25",
                "data.long_tail.ratio=20", "synthetic_filters=[drs]", "drs_percentile=95",
            ),
            tmp_path / "out",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
