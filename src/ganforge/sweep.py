"""Multirun bookkeeping: a record per job, and a summary of all jobs when the sweep ends.

Every job writes `job.json` in its run directory (status, optimized metric, steps, overrides), also
when it fails. `SweepSummary` (a Hydra callback) gathers them into `<sweep dir>/summary.csv` and
prints the table, so a sweep's outcome is readable without opening every run. A sweep that stops
early (a job interrupted, a SLURM job cancelled) writes summary.csv too, and says how to continue.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rich
import rich.table
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
COLUMNS = ("job", "status", "metric", "value", "g_step", "overrides", "run_dir", "error")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# hydra.mode=MULTIRUN is the -m; jobs numbered from 0 again in a used sweep directory would continue
# other jobs' checkpoints (a run directory's own checkpoint wins over ckpt_path), so a rerun gets its own
NOT_RERUN = ("hydra.mode=", "hydra.sweep.dir=", "hydra.sweep.subdir=")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def write_job_record(cfg: DictConfig, status: str, metrics: dict[str, float], error: str | None) -> Path:
    """`job.json` in the run directory: what the summary (and a person) needs about this job."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    name = cfg.get("optimized_metric")
    value = metrics.get(name) if name else None
    record = {
        "job": hydra.job.num if hydra is not None and hydra.mode == RunMode.MULTIRUN else 0,
        "status": status,
        "metric": name,
        "value": value if value is None or math.isfinite(value) else None,
        "g_step": int(metrics["g_step"]) if "g_step" in metrics else None,
        "overrides": " ".join(hydra.overrides.task) if hydra is not None else "",
        "run_dir": str(cfg.paths.output_dir),
        "error": error,
    }
    path = Path(cfg.paths.output_dir) / JOB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{JOB_FILE}")]
    return sorted(records, key=lambda r: r["job"])


def write_summary(sweep_dir: Path) -> tuple[Path, list[dict[str, Any]]]:
    records = collect(sweep_dir)
    path = sweep_dir / "summary.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    return path, records


def print_summary(records: list[dict[str, Any]], path: Path) -> None:
    """A table that fits 80 columns: the overrides the jobs differ in; the full overrides and each
    job's run directory are in summary.csv."""
    tokens = [r["overrides"].split() for r in records]
    shared = set.intersection(*map(set, tokens)) if len(tokens) > 1 else set()
    table = rich.table.Table(title=f"Sweep summary ({path})")
    metric = next((r["metric"] for r in records if r["metric"]), "value")
    for column in ("job", "status", metric, "g_step", "swept overrides"):
        table.add_column(column, overflow="fold")
    for r, own in zip(records, tokens, strict=True):
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        g_step = "-" if r["g_step"] is None else str(r["g_step"])
        status = r["status"] if r["status"] == "completed" else f"[red]{r['status']}[/red]"
        swept = " ".join(t for t in own if t not in shared)
        table.add_row(str(r["job"]), status, value, g_step, swept)
    rich.print(table)


def unnamed_sweep_key(config: DictConfig) -> str | None:
    """What is wrong when the sweep varies a key its `hydra.sweep.subdir` does not name: jobs that
    differ only in it would share a run directory, and each would continue the one before it (a run
    directory's own checkpoint wins). None when every swept key is named, or the subdir is unique
    per job (${hydra.job.num}, the default)."""
    template = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]
    named = re.findall(r"\$\{([\w.]+)\}", str(template))
    if any(key.startswith("hydra.job.") for key in named):
        return None
    parser = OverridesParser.create()
    params = config.hydra.sweeper.get("params") or {}
    overrides = [
        *parser.parse_overrides([f"{key}={value}" for key, value in params.items()]),
        *parser.parse_overrides(list(config.hydra.overrides.task)),
    ]
    for override in overrides:
        key = override.key_or_group
        if not override.is_sweep_override() or key.startswith("hydra."):
            continue
        if not any(n == key or n.startswith(f"{key}.") or key.startswith(f"{n}.") for n in named):
            return (
                f"this sweep varies {key} ({override.input_line}), but hydra.sweep.subdir={template} "
                f"does not name it, so its jobs would share run directories; add it "
                f"(hydra.sweep.subdir='{template},{key.rsplit('.', 1)[-1]}=${{{key}}}'), or quote a "
                f"value whose comma is part of it ('{key}=\"...\"')"
            )
    return None


# what run_app reports when the grid sweep this process ran had failed jobs: the exit code says so
failed_grid_jobs: list[str] = []


def job_files(sweep_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sweep_dir.glob(f"*/{JOB_FILE}")}


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summary.csv in the sweep directory and a printed table.

    A grid sweep goes on past a failed job, then exits non-zero (run_app) so that a script or a
    scheduler that runs it sees the missing results; failed trials are part of a search (Optuna)."""

    def __init__(self) -> None:
        self.before: dict[Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        unnamed = unnamed_sweep_key(config)
        if unnamed is not None:  # before any job: a callback's exception would only be a warning
            raise SystemExit(f"error: {unnamed}")
        sweep_dir = Path(config.hydra.sweep.dir)
        self.before = job_files(sweep_dir) if sweep_dir.is_dir() else {}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        path, records = write_summary(sweep_dir)
        print_summary(records, path)
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return
        ran = [p for p, mtime in job_files(sweep_dir).items() if self.before.get(p) != mtime]
        failed = [r for r in map(json.loads, (p.read_text() for p in ran)) if r["status"] == "failed"]
        if failed:
            failed_grid_jobs.append(
                f"{len(failed)} of {len(ran)} jobs failed, the first with {failed[0]['error']} "
                f"({failed[0]['run_dir']}); each job's error is in {path}"
            )


def rerun_command(hydra: DictConfig, task: Sequence[str], ckpt: Path | None = None) -> str:
    """`python train.py -m ...`: the task overrides `task` run as this sweep ran its jobs, with the
    hydra overrides the user gave (launcher, search path, ...); from `ckpt` when given."""
    kept = [o for o in (*hydra.overrides.hydra, *task) if not o.startswith(NOT_RERUN)]
    if ckpt is not None:
        kept = [*(o for o in kept if not o.startswith("ckpt_path=")), f"ckpt_path={ckpt}"]
    return shlex.join(["python", "train.py", "-m", *kept])


def how_to_continue(config: DictConfig, stopped: Sequence[tuple[Sequence[str], Path | None]]) -> str:
    """How to continue a sweep whose jobs `stopped` ([(overrides, checkpoint)]) were stopped: a grid
    reruns each of them from its checkpoint (rerunning the sweep would redo the finished jobs); a search
    (Optuna) decides its jobs itself, and its own command continues it."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return f"continue the sweep with: {rerun_command(config.hydra, config.hydra.overrides.task)}"
    commands = [rerun_command(config.hydra, task, ckpt) for task, ckpt in stopped]
    return f"resume with: {' ; '.join(commands)}"
