"""The evaluation task: a checkpoint's sample quality under a stated protocol, printed and saved."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import rich
import rich.table
from omegaconf import DictConfig, OmegaConf

from ganforge.checkpoint import build_stored, load_checkpoint, load_model, pick_device, stored_config
from ganforge.errors import GanforgeError, one_line_errors
from ganforge.metrics.evaluator import build_evaluator

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of `cfg.ckpt_path` and the protocol they were measured under."""
    device = pick_device(cfg.device)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    model = load_model(checkpoint, device, cfg.ckpt_path)
    data_dir = cfg.data.get("data_dir")
    if cfg.get("data_dir"):
        if data_dir:
            raise GanforgeError("data_dir= is the old name of data.data_dir=: pass only data.data_dir")
        log.warning("eval.py data_dir= is deprecated: it is data.data_dir=, as in train.py")
        data_dir = cfg.data_dir
    stored_data = stored_config(checkpoint).get("data") or {}
    if data_dir and "data_dir" not in stored_data:
        data_class = str(stored_data.get("_target_")).rsplit(".")[-1]
        raise GanforgeError(
            f"data.data_dir={data_dir}: this checkpoint's data ({data_class}) is bundled or generated and "
            "has no folder to move; drop data.data_dir"
        )
    moved = {"data_dir": data_dir} if data_dir else {}
    if stored_data.get("pack"):  # this machine's packs, not the trainer's
        moved["pack_dir"] = str(Path(cfg.paths.cache_dir) / "packs")
    datamodule = build_stored(checkpoint, "data", cfg.ckpt_path, moved)
    datamodule.prepare_data()
    datamodule.setup("fit")

    settings = OmegaConf.to_container(cfg.metrics, resolve=True)
    evaluator = build_evaluator(settings, datamodule, device)
    if evaluator is None:
        raise GanforgeError(
            f"no feature network for {datamodule.name} "
            f"(metrics.feature_network={settings['feature_network']}); use metrics=inception with its "
            "weights, or metrics=classifier for labelled data"
        )
    values = evaluator.evaluate(model, device)
    protocol = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "generator step": model.g_step,
        "generator": "EMA weights" if model.sampling_generator is not model.generator else "trained weights",
        **evaluator.protocol,
    }
    return values, protocol


def save(values: dict[str, float], protocol: dict[str, Any], out_dir: Path) -> list[Path]:
    """metrics.json (values + protocol) and metrics.csv (one row) in the run directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "metrics.json", out_dir / "metrics.csv"
    json_path.write_text(json.dumps({"metrics": values, "protocol": protocol}, indent=2) + "\n")
    row = values | {f"protocol/{k}": v for k, v in protocol.items()}
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return [json_path, csv_path]


COUNTS = ("classes_covered", "modes_covered")  # how many, not a share


def print_table(values: dict[str, float], protocol: dict[str, Any]) -> None:
    table = rich.table.Table(title="Sample quality", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in values.items():
        table.add_row(name, f"{value:.0f}" if name in COUNTS else f"{value:.4f}")
    rich.print(table)
    # key: value lines, not a table: a table cuts long values such as the checkpoint's path
    console = rich.get_console()
    console.print("Protocol", style="bold")
    for key, value in protocol.items():
        console.print(f"  {key}: {value}", soft_wrap=True, markup=False, highlight=False)


def main(cfg: DictConfig) -> dict[str, float]:
    """Entry point behind the root `eval.py`: user mistakes end in one line and exit code 1."""
    with one_line_errors():
        values, protocol = evaluate(cfg)
    print_table(values, protocol)
    files = save(values, protocol, Path(cfg.paths.output_dir))
    log.info("saved %s", ", ".join(map(str, files)))
    return values
