"""The synthetic-data chain after training (`synthesize=default`): export a labelled synthetic set from
the trained checkpoint, then measure it with the downstream classifier on the same real data the GAN
was trained on (its scarce subset included) — one command from data to the augment table."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from omegaconf import DictConfig, OmegaConf

from ganforge.augment import augment, drs_kept, training_tensors, write_csv
from ganforge.callbacks.checkpoint import BestCheckpoint, GANCheckpoint
from ganforge.callbacks.sample_quality import SampleQualityCallback
from ganforge.checkpoint import pick_device
from ganforge.datamodules.base import ImageDataModule, labels_of
from ganforge.errors import GanforgeError
from ganforge.generate import EXPORT_KEYS, export_checkpoint
from ganforge.metrics.features import classifier_features
from ganforge.metrics.per_class import per_class_quality
from ganforge.synthetic_dataset import MANIFEST, class_counts, file_sha256, load, not_an_export

log = logging.getLogger(__name__)


def synthesize_on(cfg: DictConfig) -> bool:
    """Whether the chain runs: the `synthesize` group is selected. `~synthesize` removes the group but
    leaves an experiment's own synthesize settings behind, without the group's keys: the GAN alone."""
    settings = cfg.get("synthesize")
    if not settings:
        return False
    if "out_dir" not in settings:
        log.info("synthesize is off (~synthesize): training the GAN alone, its synthesize settings unused")
        return False
    return True


def check_synthesize(cfg: DictConfig, datamodule: LightningDataModule) -> None:
    """Refuse, before training, a chain that could only fail after it."""
    if cfg.model.get("num_classes") is None:
        raise GanforgeError(
            "synthesize needs a conditional model (model=cdcgan or csngan): an unconditional model's "
            "samples have no labels for the downstream classifier"
        )
    out_dir = Path(cfg.synthesize.out_dir)
    reason = not_an_export(out_dir) if out_dir.is_dir() and any(out_dir.iterdir()) else None
    if reason is not None:
        raise GanforgeError(
            f"synthesize.out_dir={out_dir} is not empty and is not a ganforge export ({reason}); "
            "set synthesize.out_dir to a new folder"
        )
    export, ratios = cfg.synthesize.export, cfg.synthesize.downstream.ratios
    counts = OmegaConf.to_object(export.counts) if export.counts else None
    have = sum(class_counts(export.num_samples, cfg.model.num_classes, counts))
    mixing = {"mixed", "mixed_augmented"} & set(cfg.synthesize.downstream.strategies)
    if not ratios or not mixing:  # filtered uses what passes; the other strategies use every sample
        return
    datamodule.prepare_data()
    datamodule.setup("fit")
    n_real = len(datamodule.data_train)
    need = round(max(ratios) * n_real)
    if need > have:
        raise GanforgeError(
            f"synthesize.downstream.ratios up to {max(ratios)} need {need} synthetic images ({n_real} "
            f"real), but synthesize.export exports {have}; raise synthesize.export.num_samples to {need}"
        )


def trained_checkpoint(trainer: Trainer, which: str) -> Path:
    """`best` (by the sample-quality metric; the last one when nothing was evaluated) or `last`."""
    if which not in ("best", "last"):
        raise GanforgeError(f"synthesize.checkpoint must be best or last, got {which}")
    best = [cb.best_model_path for cb in trainer.callbacks if isinstance(cb, BestCheckpoint)]
    if which == "best" and best and best[0] and Path(best[0]).is_file():
        return Path(best[0])
    last = [cb.last_model_path for cb in trainer.callbacks if isinstance(cb, GANCheckpoint)]
    if not last or not last[0]:
        raise GanforgeError(
            "synthesize needs a checkpoint: keep callbacks.model_checkpoint (save_last: true)"
        )
    if which == "best":
        log.info("no best checkpoint (no sample-quality evaluation): synthesizing from the last one")
    return Path(last[0])


def earlier_export(out_dir: Path, ckpt: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete, untouched export of the same checkpoint with the same settings in
    `out_dir` (exports are renamed into place whole), else None; anything else there is refused by the
    export."""
    if not out_dir.is_dir() or not_an_export(out_dir) is not None:
        return None
    manifest = json.loads((out_dir / MANIFEST).read_text())
    same_checkpoint = manifest.get("checkpoint", {}).get("sha256") == file_sha256(ckpt.resolve())
    return manifest if same_checkpoint and manifest.get("export_settings") == settings else None


def last_quality(trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
    """The GAN's latest sample-quality values: from the callback, which keeps them in checkpoints (a
    run that restarts after its last step evaluates nothing and logs none), else the logged ones."""
    kept = [cb.last_values for cb in trainer.callbacks if isinstance(cb, SampleQualityCallback)]
    return kept[0] if kept and kept[0] else {k: v for k, v in metrics.items() if k.startswith("val/")}


def synthesize(cfg: DictConfig, trainer: Trainer, metrics: dict[str, float]) -> dict[str, str]:
    """Export, then augment; returns where the outputs went. `augment/gan.json` records the real data's
    size (or imbalance), the GAN's seed, its last sample-quality metrics and its quality on the rare
    and head classes, for the scarcity and long-tail curves; `augment/gan_classes.csv` has it per class."""
    settings = cfg.synthesize
    ckpt = trained_checkpoint(trainer, settings.checkpoint)
    export = OmegaConf.to_container(settings.export, resolve=True)
    out_dir = Path(settings.out_dir)
    wanted = {k: export[k] for k in EXPORT_KEYS}
    manifest = earlier_export(out_dir, ckpt, wanted)
    if manifest is None and out_dir.is_dir() and any(out_dir.iterdir()):
        reason = not_an_export(out_dir)
        what = (
            "holds an export of another checkpoint or with other export settings"
            if reason is None
            else f"is not a ganforge export ({reason})"
        )
        raise GanforgeError(
            f"synthesize.out_dir={out_dir} {what}, from before this job started again or changed since; "
            "move it away, or set synthesize.out_dir to a new folder, and run again: training is done and "
            "will not repeat"
        )
    if manifest is None:
        manifest = export_checkpoint(ckpt, out_dir, wanted, False, settings.device)
        log.info("exported %d synthetic samples from %s to %s", manifest["num_samples"], ckpt, out_dir)
    else:
        log.info("%s already holds this checkpoint's export (a job that started again): reusing it", out_dir)
    augment_cfg = OmegaConf.create({
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "synthetic_dir": str(out_dir),
        "device": settings.device,
        "wandb": {"enabled": "wandb" in (cfg.get("logger") or {}), "project": "ganforge", "entity": None},
        **OmegaConf.to_container(settings.downstream, resolve=True),
    })  # fmt: skip
    if augment_cfg.wandb.enabled:
        augment_cfg.wandb.project = cfg.logger.wandb.project
        augment_cfg.wandb.entity = cfg.logger.wandb.entity
    results_dir = Path(cfg.paths.output_dir) / "augment"
    augment(augment_cfg, results_dir)
    data = trainer.datamodule
    classes, summary = gan_classes(cfg, data, out_dir)
    write_csv(classes, results_dir / "gan_classes.csv")
    record = {
        "real per class": len(data.data_train) // data.num_classes,
        "imbalance profile": data.long_tail.profile if data.long_tail is not None else None,
        "imbalance ratio": data.long_tail.ratio if data.long_tail is not None else None,
        "gan seed": cfg.seed,
        "checkpoint": str(ckpt),
        "quality": {k.removeprefix("val/"): v for k, v in last_quality(trainer, metrics).items()} | summary,
    }
    (results_dir / "gan.json").write_text(json.dumps(record, indent=2) + "\n")
    return {
        "synthetic data": str(out_dir),
        "augment table": str(results_dir / "summary.csv"),
        "GAN per class": str(results_dir / "gan_classes.csv"),
    }


def gan_classes(
    cfg: DictConfig, data: ImageDataModule, out_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The exported samples' quality per class (`metrics.per_class`), judged by the metrics classifier
    against the real test images; also of the DRS-kept samples when the downstream study filters."""
    settings = cfg.synthesize.downstream
    device = pick_device(cfg.synthesize.device)
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True)
    judge = classifier_features(data, metrics["classifier"], metrics["cache_dir"], device)
    images, labels, _ = load(out_dir)
    kept = (
        drs_kept(str(out_dir), labels, settings.drs_percentile)
        if "drs" in settings.synthetic_filters
        else None
    )
    held_out = training_tensors(data.data_test)
    return per_class_quality(
        judge, (images, labels), held_out, labels_of(data.data_train), data.num_classes, device, kept
    )
