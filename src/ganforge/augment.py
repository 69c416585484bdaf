"""The augment task: does synthetic data help a classifier trained on scarce real data?

Trains the downstream classifier (the metrics classifier's architecture) with the same number of steps
under each of `downstream.STRATEGIES` — real only (plain and with standard augmentation), real +
synthetic at ratios (plain, augmented, confidence-filtered), a weighted synthetic loss, pre-training on
synthetic data, synthetic only (the Classification Accuracy Score of Ravuri & Vinyals 2019) — and
reports test accuracy on the real test set over several seeds.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from pathlib import Path
from typing import Any

import rich
import rich.table
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ganforge import downstream, synthetic_dataset
from ganforge.atomic import atomic_write_text
from ganforge.checkpoint import pick_device
from ganforge.config import instantiate
from ganforge.datamodules.base import ImageDataModule, labels_of, match_channels, resize_uint8
from ganforge.errors import GanforgeError, one_line_errors
from ganforge.tracking import finish_wandb_run, wandb_offline

log = logging.getLogger(__name__)

Result = dict[str, Any]


def training_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """(uint8 images, labels) of a data set: tensor sets are sliced, file sets decoded once."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images, labels_of(dataset)


def load_synthetic(folder: str, datamodule: ImageDataModule) -> tuple[Tensor, Tensor]:
    """A synthetic set in the real data's format (channels, size), refused when its labels cannot be
    the real data's classes."""
    images, labels, _ = synthetic_dataset.load(folder)
    if len(labels) == 0 or labels.min() < 0:
        raise GanforgeError(
            f"synthetic_dir={folder} has no class labels (an unconditional model's export); export from "
            "a conditional model (model=cdcgan or csngan) to train a classifier on it"
        )
    if labels.max() >= datamodule.num_classes:
        raise GanforgeError(
            f"synthetic_dir={folder} has class {int(labels.max())} but {datamodule.name} has "
            f"{datamodule.num_classes} classes; export from a model trained on {datamodule.name}"
        )
    if images.shape[1:] != (datamodule.channels, datamodule.image_size, datamodule.image_size):
        log.info("synthetic images %s converted to the real data's format", tuple(images.shape[1:]))
        images = resize_uint8(match_channels(images, datamodule.channels), datamodule.image_size)
    return images, labels


def run(
    datamodule: ImageDataModule, synthetic_dir: str | None, settings: dict[str, Any], device: torch.device
) -> list[Result]:
    """One result per (row, seed): training-set sizes and real test accuracy."""
    if not datamodule.num_classes or datamodule.num_classes < 2:
        raise GanforgeError(f"augment.py needs labelled data, and {datamodule.name} has no classes")
    strategies = downstream.check(settings, has_synthetic=bool(synthetic_dir))
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.data_test is None or len(datamodule.data_test) == 0:
        raise GanforgeError(f"augment.py measures on the real test split, and {datamodule.name} has none")
    real = training_tensors(datamodule.data_train)
    fake = load_synthetic(synthetic_dir, datamodule) if synthetic_dir else None
    if fake is not None:
        downstream.check_ratios(settings, strategies, len(real[1]), len(fake[1]))
    test: Dataset = datamodule.data_test
    size = settings["classifier"].get("image_size")
    if size is not None and size != datamodule.image_size:  # a cheaper classifier: every set resized
        log.info("the downstream classifier sees %dx%d images (classifier.image_size)", size, size)
        test_images, test_labels = training_tensors(test)
        test = TensorDataset(resize_uint8(test_images, size), test_labels)
        real = (resize_uint8(real[0], size), real[1])
        fake = None if fake is None else (resize_uint8(fake[0], size), fake[1])
    experiment = downstream.Downstream(
        real, fake, test, datamodule.num_classes, settings["classifier"], device,
        instantiate(OmegaConf.create(settings["augmentation"])) if settings.get("augmentation") else None,
    )  # fmt: skip
    return experiment.run(strategies, settings["seeds"], settings)


def summarise(results: list[Result]) -> list[Result]:
    """Mean ± std of test accuracy per setting, in the order the settings were run."""
    rows: dict[str, Result] = {}
    for r in results:
        row = rows.setdefault(
            r["setting"],
            {k: r[k] for k in ("strategy", "setting", "value", "real images", "synthetic images")},
        )
        row.setdefault("accuracies", []).append(r["test accuracy"])
    for row in rows.values():
        acc = row.pop("accuracies")
        row |= {
            "seeds": len(acc),
            "mean": statistics.mean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        }
    return list(rows.values())


def save(results: list[Result], summary: list[Result], out_dir: Path) -> list[Path]:
    return [
        write_csv(rows, out_dir / name) for name, rows in (("results.csv", results), ("summary.csv", summary))
    ]


def write_csv(rows: list[Result], path: Path) -> Path:
    """Every column any row has, in the order they first appear; a row without one leaves it empty
    (e.g. a GAN measured before a metric existed, beside one measured after). Written atomically: a
    full disk or a read-only folder ends in one line and leaves no empty or half file."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(text.getvalue(), path, "paths.log_dir")


def print_table(summary: list[Result], title: str) -> None:
    table = rich.table.Table(title=title)
    for column in ("setting", "real images", "synthetic images", "seeds", "test accuracy"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in summary:
        table.add_row(
            row["setting"], str(row["real images"]), str(row["synthetic images"]), str(row["seeds"]),
            f"{row['mean']:.4f} ± {row['std']:.4f}",
        )  # fmt: skip
    rich.print(table)


def log_wandb(results: list[Result], summary: list[Result], cfg: DictConfig, out_dir: Path) -> str | None:
    """The two tables and each setting's mean accuracy as a W&B run; the `wandb sync` command if offline."""
    import wandb

    offline = wandb_offline()
    run = wandb.init(
        project=cfg.wandb.project, entity=cfg.wandb.entity, job_type="augment", name=out_dir.name,
        dir=str(out_dir), mode="offline" if offline else "online",
        config=OmegaConf.to_container(cfg, resolve=True),
    )  # fmt: skip
    for key, rows in (("results", results), ("summary", summary)):
        run.log({key: wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})
    for row in summary:
        run.summary[f"test_accuracy/{row['setting']}"] = row["mean"]
    sync = f"wandb sync {run.settings.sync_dir}" if offline else None
    finish_wandb_run(run, exit_code=0)
    return sync


def augment(cfg: DictConfig, out_dir: Path) -> list[Result]:
    datamodule = instantiate(cfg.data)
    settings = OmegaConf.to_container(cfg, resolve=True)
    results = run(datamodule, cfg.synthetic_dir, settings, pick_device(cfg.device))
    summary = summarise(results)
    print_table(summary, f"{datamodule.name}: real test accuracy by training set")
    files = save(results, summary, out_dir)
    log.info("saved %s", ", ".join(map(str, files)))
    if cfg.wandb.enabled:
        sync = log_wandb(results, summary, cfg, out_dir)
        if sync:
            log.info("W&B (offline): upload with: %s", sync)
    return summary


def main(cfg: DictConfig) -> list[Result]:
    """Entry point behind the root `augment.py`: user mistakes end in one line and exit code 1."""
    with one_line_errors():
        return augment(cfg, Path(cfg.paths.output_dir))
