"""`data.long_tail`: long-tailed training splits with exactly the requested per-class counts, seeded,
validation and test left as drawn, the counts recorded with the run; mistakes in one line."""

from __future__ import annotations

import csv
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


def test_the_metrics_classifier_learns_from_the_whole_split_unless_told_otherwise(tmp_path: Path) -> None:
    """A judge trained on the long-tailed split would have seen few rare-class images: by default it
    learns from the split before the cut, the same judge as for the uncut data set."""
    from unittest import mock

    from ganforge.metrics import features
    from tests.test_metrics import SETTINGS

    seen = []

    def fit(model, train, *args, **kwargs):
        seen.append(len(train))
        return model

    tail, full = digits(ratio=10), digits()
    with mock.patch.object(features, "fit_classifier", side_effect=fit):
        judged = features.classifier_features(tail, SETTINGS, str(tmp_path), torch.device("cpu"))
        uncut = features.classifier_features(full, SETTINGS, str(tmp_path), torch.device("cpu"))
        subset = features.classifier_features(
            tail, SETTINGS | {"train_split": "subset"}, str(tmp_path), torch.device("cpu")
        )
    assert seen == [len(full.data_train), len(tail.data_train)]  # the uncut one came from the cache
    assert judged.id == uncut.id != subset.id
    with user_error(r"metrics.classifier.train_split must be full or subset, got 'all'$"):
        features.classifier_features(
            tail, SETTINGS | {"train_split": "all"}, str(tmp_path), torch.device("cpu")
        )


def test_class_balanced_batches_draw_every_class_equally_often_and_resume_exactly() -> None:
    dm = DigitsDataModule(long_tail={"ratio": 20}, class_balanced=True, batch_size=32)
    dm.setup()
    torch.manual_seed(3)
    loader = dm.train_dataloader()
    labels = []
    for epoch in range(12):
        loader.sampler.set_epoch(epoch)
        labels += [y for _, y in loader]
    labels = torch.cat(labels)
    share = labels.bincount(minlength=10) / len(labels)
    assert dm.train_class_counts[0] >= 15 * dm.train_class_counts[-1] and len(labels) > 4000
    assert share.min() > 0.08 and share.max() < 0.12  # within ~4 standard errors of 0.1
    plain = DigitsDataModule(long_tail={"ratio": 20}, batch_size=32)
    plain.setup()
    plain_labels = torch.cat([y for _, y in plain.train_dataloader()])
    assert plain_labels.bincount(minlength=10)[-1] < 0.02 * len(plain_labels)
    # the draw is the run seed's and resumable: a loader restored mid-epoch yields what is left
    torch.manual_seed(3)
    first = dm.train_dataloader()
    batches = iter(first)
    head = [next(batches)[1] for _ in range(3)]
    state = first.state_dict()
    rest = [y for _, y in batches]
    torch.manual_seed(3)
    again = dm.train_dataloader()
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip([y for _, y in again], rest, strict=True))
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat(head + rest), torch.cat([y for _, y in loader]))


def test_class_balanced_batches_need_labels(tmp_path: Path) -> None:
    from tests.test_datamodules import RED, folder_module, solid, write_image

    for i in range(6):
        write_image(tmp_path / "flat" / f"{i}.png", solid(RED))
    dm = folder_module(tmp_path / "flat", class_balanced=True, batch_size=2)
    with user_error(r"data.class_balanced=true draws every class equally often, and imagefolder has no"):
        dm.train_dataloader()


@pytest.mark.slow
def test_the_long_tail_curve_in_one_multirun(tmp_path: Path, run_script) -> None:
    from tests.conftest import SMALL_NETWORKS

    args = [
        "hydra.mode=MULTIRUN", "experiment=long_tail_mnist", "data=digits", "data.long_tail.ratio=10",
        "data.long_tail.profile=exponential,step", "seed=0", "data.image_size=16", "max_g_steps=4",
        *SMALL_NETWORKS["cdcgan"], "logger=csv",
        "extras.print_config=false", "metrics.num_samples=200", "metrics.num_reference=100",
        "metrics.classifier.epochs=2", "metrics.classifier.width=16",
        "callbacks.sample_quality.every_n_g_steps=4", "callbacks.sample_grid.every_n_g_steps=4",
        "synthesize.export.num_samples=600", "synthesize.downstream.seeds=[0,1]",
        "synthesize.downstream.classifier.steps=2", "synthesize.downstream.classifier.width=8",
        "synthesize.downstream.strategies=[real,resampled,filled]", "data.batch_size=16",
    ]  # fmt: skip
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = {job.name for job in sweep.iterdir() if (job / "augment" / "gan.json").is_file()}
    assert jobs == {"profile=exponential,ratio=10,seed=0", "profile=step,ratio=10,seed=0"}  # apart
    rows = list(csv.DictReader((sweep / "long_tail.csv").open()))
    assert [(r["imbalance profile"], r["imbalance ratio"], r["setting"], r["pairs"]) for r in rows] == [
        (profile, "10", setting, "2")
        for profile in ("exponential", "step")
        for setting in (
            "real", "real, re-sampled", "real + synthetic fill to 0.25 x n_max, re-sampled",
            "real + synthetic fill to 0.25 x n_max, re-sampled (DRS)",
        )
    ]  # fmt: skip
    assert all(0 <= float(r["rare-class recall"]) <= 1 for r in rows)
    classes = list(csv.DictReader((sweep / "gan_classes.csv").open()))
    assert len(classes) == 20 and {"class accuracy after DRS", "fid"} <= set(classes[0])
    quality = list(csv.DictReader((sweep / "gan_quality.csv").open()))
    assert {"rare class accuracy", "rare fid", "head fid after DRS"} <= set(quality[0])
    assert (sweep / "long_tail.png").is_file() and "Long-tail curve" in result.stdout


def test_without_the_synthesize_group_an_experiment_trains_its_gan_alone(make_cfg) -> None:
    """`~synthesize` drops the group, but an experiment's own synthesize settings stay behind (no
    out_dir, no export settings): that is the GAN alone, not a crash after training."""
    from ganforge.synthesize import synthesize_on

    cfg = make_cfg(
        "experiment=long_tail_mnist", "~synthesize", "data=digits", "metrics=none", "max_g_steps=2"
    )
    assert cfg.synthesize.downstream.fill_target == 0.25 and not synthesize_on(cfg)
    _, where = train(cfg)
    assert "synthetic data" not in where and not (Path(cfg.paths.output_dir) / "synthetic").exists()
