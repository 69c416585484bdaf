"""The generate task: export a checkpoint's samples as a labelled synthetic data set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import rich
import rich.table
from omegaconf import DictConfig, OmegaConf

from ganforge.atomic import StopSignals
from ganforge.checkpoint import load_checkpoint, load_model, pick_device, stored_config
from ganforge.errors import one_line_errors
from ganforge.synthetic_dataset import class_counts, export, file_sha256

log = logging.getLogger(__name__)

EXPORT_KEYS = ("num_samples", "counts", "seed", "format", "batch_size")  # conf/export/default.yaml


def export_checkpoint(
    ckpt_path: str | Path, out_dir: str | Path, settings: dict[str, Any], overwrite: bool, device: str
) -> dict[str, Any]:
    """Write the samples `settings` ask for (num_samples, counts, seed, format, batch_size) from the
    checkpoint's sampling generator to `out_dir`; returns the manifest. Ctrl-C and SIGTERM end it in
    one line (exit code 130, 143), here and while export() writes."""
    with StopSignals(f"stopped before writing anything to {out_dir}").active():
        checkpoint = load_checkpoint(ckpt_path)
        model = load_model(checkpoint, pick_device(device), ckpt_path)
        counts = class_counts(settings["num_samples"], model.num_classes, settings["counts"])
        ckpt = Path(ckpt_path).resolve()
        provenance = {
            "checkpoint": {
                "path": str(ckpt),
                "sha256": file_sha256(ckpt),
                "generator step": model.g_step,
                "generator": "EMA weights"
                if model.sampling_generator is not model.generator
                else "trained weights",
            },
            "export_settings": settings,
            "training_config": OmegaConf.to_container(stored_config(checkpoint), resolve=True),
        }
        return export(  # which says what a signal left while it writes
            model, Path(out_dir), counts, settings["seed"], settings["batch_size"], settings["format"],
            overwrite, provenance,
        )  # fmt: skip


def print_summary(manifest: dict[str, Any], out_dir: str) -> None:
    table = rich.table.Table(title=f"Exported {manifest['num_samples']} samples ({manifest['format']})")
    table.add_column("class")
    table.add_column("samples", justify="right")
    for name, n in manifest["counts"].items():
        table.add_row(name, str(n))
    rich.print(table)
    log.info("synthetic data set: %s (%s)", Path(out_dir).resolve(), manifest["checkpoint"]["generator"])


def main(cfg: DictConfig) -> dict[str, Any]:
    """Entry point behind the root `generate.py`: user mistakes end in one line and exit code 1."""
    settings = {
        k: OmegaConf.to_object(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in EXPORT_KEYS
    }
    with one_line_errors():
        manifest = export_checkpoint(cfg.ckpt_path, cfg.out_dir, settings, cfg.overwrite, cfg.device)
    print_summary(manifest, cfg.out_dir)
    return manifest
