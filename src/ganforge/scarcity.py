"""The scarcity curve: where synthetic data pays, from a multirun over the synthesize chain
(`python train.py -m experiment=scarcity_mnist data.train_per_class=5,10,20,60 seed=0,1`).

Every job (one real-data size, one GAN seed) leaves `augment/results.csv` (a row per strategy setting
and downstream seed) and `augment/gan.json` (the size, the GAN's seed and its sample quality). Per size
and setting the curve holds the mean test accuracy and the paired difference to the best real-only
baseline of that size (`real` or `real + augmentation`, the higher mean), paired over (GAN seed,
downstream seed), with a 95% t interval: a setting helps where the whole interval is above zero.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rich
import rich.table
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from scipy import stats

from ganforge.augment import write_csv
from ganforge.errors import GanforgeError, one_line_errors
from ganforge.tracking import finish_wandb_run, wandb_offline

log = logging.getLogger(__name__)

RESULTS, GAN = "augment/results.csv", "augment/gan.json"
BASELINES = ("real", "real_augmented")
Row = dict[str, Any]


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t interval (nan bounds with fewer than 2 pairs)."""
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


def load_jobs(sweep_dir: Path) -> tuple[list[Row], list[Row]]:
    """Every job's downstream results (with its size and GAN seed) and its GAN record."""
    results, gans = [], []
    for gan_file in sorted(sweep_dir.glob(f"*/{GAN}")):
        gan = json.loads(gan_file.read_text())
        gans.append(gan)
        with (gan_file.parent / "results.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                row = {**row, "test accuracy": float(row["test accuracy"]), "seed": int(row["seed"])}
                results.append(row | {"real per class": gan["real per class"], "gan seed": gan["gan seed"]})
    return results, gans


def curve(results: list[Row]) -> list[Row]:
    """A row per (real images per class, setting): accuracy over all pairs, and the paired difference
    to that size's best real-only baseline."""
    accuracy: dict[tuple[int, str], dict[tuple[int, int], float]] = defaultdict(dict)
    strategy = {}
    for r in results:
        accuracy[r["real per class"], r["setting"]][r["gan seed"], r["seed"]] = r["test accuracy"]
        strategy[r["setting"]] = r["strategy"]
    rows = []
    for size in sorted({size for size, _ in accuracy}):
        settings = [s for n, s in accuracy if n == size]
        baselines = [s for s in settings if strategy[s] in BASELINES]
        if not baselines:
            raise GanforgeError(
                f"no real-only baseline at {size} real images per class: keep real or real_augmented in "
                "strategies"
            )
        best = max(baselines, key=lambda s: statistics.fmean(accuracy[size, s].values()))
        for setting in settings:
            mine, base = accuracy[size, setting], accuracy[size, best]
            pairs = sorted(set(mine) & set(base))
            diff, low, high = paired_interval([mine[p] - base[p] for p in pairs])
            values = list(mine.values())
            rows.append({
                "real per class": size,
                "strategy": strategy[setting],
                "setting": setting,
                "pairs": len(pairs),
                "accuracy": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "baseline": best,
                "difference": diff,
                "ci low": low,
                "ci high": high,
                "helps": low > 0,
            })  # fmt: skip
    return rows


def gan_quality(gans: list[Row]) -> list[Row]:
    """The GANs' sample quality per size, averaged over their seeds: is a bad GAN to blame?"""
    by_size: dict[int, list[Row]] = defaultdict(list)
    for gan in gans:
        by_size[gan["real per class"]].append(gan)
    rows = []
    for size, all_runs in sorted(by_size.items()):
        runs = [r for r in all_runs if r["quality"]]
        for r in all_runs:
            if not r["quality"]:
                log.warning(
                    "the GAN of seed %s at %d per class recorded no sample quality", r["gan seed"], size
                )
        keys = sorted({k for r in runs for k in r["quality"]})
        rows.append({"real per class": size, "gan seeds": len(runs)} | {
            k: statistics.fmean(r["quality"][k] for r in runs if k in r["quality"]) for k in keys
        })  # fmt: skip
    return rows


def plot(rows: list[Row], path: Path) -> Path:
    """Accuracy against real images per class, one line per strategy (its setting with the best mean
    over all sizes, chosen once, not per size), error bars one standard deviation over pairs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    overall: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        overall[r["setting"]].append(r["accuracy"])
    chosen: dict[str, str] = {}
    for r in rows:
        best = chosen.get(r["strategy"])
        if best is None or statistics.fmean(overall[r["setting"]]) > statistics.fmean(overall[best]):
            chosen[r["strategy"]] = r["setting"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for setting in chosen.values():
        points = sorted(
            (r["real per class"], r["accuracy"], r["std"]) for r in rows if r["setting"] == setting
        )
        x, y, err = zip(*points, strict=True)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=setting)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["real per class"] for r in rows}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("real training images per class")
    ax.set_ylabel("real test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_table(rows: list[Row], title: str) -> None:
    table = rich.table.Table(title=title)
    for column in ("per class", "setting", "pairs", "accuracy", "vs best real-only (95% CI)"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for r in rows:
        diff = f"{r['difference']:+.4f} [{r['ci low']:+.4f}, {r['ci high']:+.4f}]"
        table.add_row(
            str(r["real per class"]), r["setting"], str(r["pairs"]), f"{r['accuracy']:.4f} ± {r['std']:.4f}",
            f"[green]{diff}[/green]" if r["helps"] else diff,
        )  # fmt: skip
    rich.print(table)


def report(sweep_dir: Path) -> dict[str, Path] | None:
    """scarcity.csv, gan_quality.csv, scarcity.png and the printed table, for a sweep whose jobs ran
    the synthesize chain; None for any other sweep."""
    results, gans = load_jobs(sweep_dir)
    if not results:
        return None
    rows = curve(results)
    print_table(
        rows, f"Scarcity curve ({sweep_dir}): real test accuracy, paired difference to the best real-only row"
    )
    files = {
        "scarcity table": write_csv(rows, sweep_dir / "scarcity.csv"),
        "GAN quality": write_csv(gan_quality(gans), sweep_dir / "gan_quality.csv"),
        "scarcity plot": plot(rows, sweep_dir / "scarcity.png"),
    }
    for name, path in files.items():
        log.info("%s: %s", name, path)
    return files


def log_wandb(files: dict[str, Path], project: str, entity: str | None) -> str | None:
    """The curve's table and plot as one W&B run in the sweep directory; the `wandb sync` command if
    offline."""
    import wandb

    offline = wandb_offline()
    sweep_dir = files["scarcity table"].parent
    run = wandb.init(
        project=project, entity=entity, job_type="scarcity", name=f"scarcity-{sweep_dir.name}",
        dir=str(sweep_dir), mode="offline" if offline else "online",
    )  # fmt: skip
    for key in ("scarcity table", "GAN quality"):
        with files[key].open(newline="") as f:
            rows = list(csv.reader(f))
        run.log({key.replace(" ", "_"): wandb.Table(columns=rows[0], data=rows[1:])})
    run.log({"scarcity_plot": wandb.Image(str(files["scarcity plot"]))})
    sync = f"wandb sync {run.settings.sync_dir}" if offline else None
    finish_wandb_run(run, exit_code=0)
    return sync


class ScarcityCurve(Callback):
    """Hydra callback: after a multirun over the synthesize chain, the scarcity curve of its jobs
    (and a W&B run of it when the jobs logged to W&B)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        files = report(sweep_dir) if sweep_dir.is_dir() else None
        if files and "wandb" in (config.get("logger") or {}):
            sync = log_wandb(files, config.logger.wandb.project, config.logger.wandb.entity)
            if sync:
                log.info("W&B (offline): upload with: %s", sync)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ganforge.scarcity <sweep dir>`: the curve again, e.g. after a job was rerun or the
    sizes ran as separate multiruns into one sweep dir."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ganforge.scarcity", description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory of synthesize-chain jobs")
    sweep_dir = parser.parse_args(argv).sweep_dir
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with one_line_errors():
        if not sweep_dir.is_dir():
            raise GanforgeError(f"{sweep_dir} is not a directory: pass a multirun's sweep dir")
        if report(sweep_dir) is None:
            raise GanforgeError(
                f"{sweep_dir} has no */{GAN}: pass the sweep dir of a multirun that ran the synthesize "
                "chain (e.g. python train.py -m experiment=scarcity_digits)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
