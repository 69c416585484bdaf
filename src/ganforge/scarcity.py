"""The scarcity and long-tail curves: where synthetic data pays, from a multirun over the synthesize
chain (`python train.py -m experiment=scarcity_mnist`, or `experiment=long_tail_mnist`).

Every job (one regime, one GAN seed) leaves `augment/results.csv` (a row per strategy setting and
downstream seed), `augment/gan.json` (the regime, the GAN's seed and its sample quality) and
`augment/gan_classes.csv` (its quality per class). The regime is the real data's size (images per
class) for a scarcity sweep, its imbalance profile and ratio for a long-tail one (`data.long_tail`:
a sweep may hold exponential and step tails side by side, each its own regime). Per regime
and setting the curve holds the mean score and the paired difference to the best real-only baseline of
that regime (the higher mean), paired over (GAN seed, downstream seed), with a 95% t interval (a
real-only row that every GAN job repeats to the last digit counts once per downstream seed): a
setting helps where the whole interval is above zero. The score is test accuracy for scarcity, and
balanced accuracy (mean per-class recall) for a long tail, whose rows also hold the rare classes'
recall, where a long tail hurts most.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rich
import rich.table
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from scipy import stats

from ganforge.augment import write_csv
from ganforge.downstream import REAL_ONLY
from ganforge.errors import GanforgeError, one_line_errors
from ganforge.tracking import finish_wandb_run, wandb_offline

log = logging.getLogger(__name__)

RESULTS, GAN, GAN_CLASSES = "augment/results.csv", "augment/gan.json", "augment/gan_classes.csv"
Row = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """What a sweep varies and how its rows are scored."""

    name: str  # of the files: <name>.csv, <name>.png
    title: str
    regime: tuple[str, ...]  # the columns that say which regime a row is in; the last is the plot's x
    score: str  # results.csv's column the curve compares
    baselines: tuple[str, ...]  # the real-only strategies, the best of which is the bar
    axis: str

    def of(self, job: Row) -> tuple[Any, ...]:
        return tuple(job[column] for column in self.regime)

    def columns(self, regime: tuple[Any, ...]) -> Row:
        return dict(zip(self.regime, regime, strict=True))

    def label(self, regime: tuple[Any, ...]) -> str:
        """A regime in a table cell: `5`, `100`, `100 (step)` (an exponential tail is the default)."""
        *group, x = regime
        return " ".join([f"{x:g}", *(f"({g})" for g in group if g != "exponential")])

    def describe(self, regime: tuple[Any, ...]) -> str:
        """A regime in a sentence: `real per class 5`, `imbalance ratio 100 (step)`."""
        return f"{self.regime[-1]} {self.label(regime)}"


SCARCITY = Kind(
    "scarcity", "Scarcity curve", ("real per class",), "test accuracy", ("real", "real_augmented"),
    "real training images per class",
)  # fmt: skip
LONG_TAIL = Kind(
    "long_tail", "Long-tail curve", ("imbalance profile", "imbalance ratio"), "balanced accuracy", REAL_ONLY,
    "imbalance ratio (largest class / smallest)",
)  # fmt: skip
BASELINES = SCARCITY.baselines


def kind_of(gans: list[Row]) -> Kind:
    return LONG_TAIL if any(gan.get("imbalance ratio") for gan in gans) else SCARCITY


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided t interval (nan bounds with fewer than 2 pairs)."""
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return mean, mean - half, mean + half


SCORES = ("test accuracy", "balanced accuracy", "rare-class recall")  # results.csv's numbers
JOB_KEYS = ("real per class", "imbalance profile", "imbalance ratio", "gan seed")  # gan.json's, on every row


def load_jobs(sweep_dir: Path) -> tuple[list[Row], list[Row], list[Row]]:
    """Every job's downstream results and per-class GAN quality (with its regime and GAN seed) and its
    GAN record."""
    results, gans, classes = [], [], []
    for gan_file in sorted(sweep_dir.glob(f"*/{GAN}")):
        gan = json.loads(gan_file.read_text())
        if gan.get("imbalance ratio"):  # records from before profiles were: exponential tails
            gan.setdefault("imbalance profile", "exponential")
        gans.append(gan)
        job = {key: gan.get(key) for key in JOB_KEYS}
        with (gan_file.parent / "results.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                scores = {k: float(row[k]) if row.get(k) else None for k in SCORES}  # "": balanced
                results.append(row | scores | {"seed": int(row["seed"])} | job)
        per_class = gan_file.parent / "gan_classes.csv"
        if per_class.is_file():
            with per_class.open(newline="") as f:
                classes += [
                    {k: float(v) if v else None for k, v in row.items()} | job for row in csv.DictReader(f)
                ]
    return results, gans, classes


Pair = tuple[int | None, int]  # (GAN seed, downstream seed); None: the same for every GAN seed


def one_per_seed(values: dict[Pair, float]) -> dict[Pair, float]:
    """A real-only row's `values` when every GAN job repeated it to the last digit (the same real
    subset, the same classifier seeds): once per downstream seed, as (None, seed), since n jobs
    running the same classifier are not n times the evidence. Values that differ stay apart."""
    by_seed: dict[int, set[float]] = defaultdict(set)
    for (_, seed), value in values.items():
        by_seed[seed].add(value)
    if any(len(v) > 1 for v in by_seed.values()):
        return values
    return {(None, seed): v.pop() for seed, v in by_seed.items()}


def paired(mine: dict[Pair, float], base: dict[Pair, float]) -> list[float]:
    """mine - base per pair; a value measured once per downstream seed pairs with each GAN seed's."""
    gans = {g for g, _ in (*mine, *base) if g is not None} or {None}
    seeds = {s for _, s in (*mine, *base)}
    differences = []
    for pair in itertools.product(gans, seeds):
        a, b = (v.get(pair, v.get((None, pair[1]))) for v in (mine, base))
        if a is not None and b is not None:
            differences.append(a - b)
    return differences


def curve(results: list[Row], kind: Kind = SCARCITY) -> list[Row]:
    """A row per (regime, setting): the score over all pairs, and the paired difference to that
    regime's best real-only baseline; for a long tail also the rare classes' recall and its paired
    difference."""
    score: dict[tuple[Any, str], dict[Pair, float]] = defaultdict(dict)
    rare: dict[tuple[Any, str], dict[Pair, float]] = defaultdict(dict)
    strategy = {}
    for r in results:
        key, pair = (kind.of(r), r["setting"]), (r["gan seed"], r["seed"])
        score[key][pair] = r[kind.score]
        if r.get("rare-class recall") is not None:
            rare[key][pair] = r["rare-class recall"]
        strategy[r["setting"]] = r["strategy"]
    for key in score:
        if strategy[key[1]] in kind.baselines:
            score[key], rare[key] = one_per_seed(score[key]), one_per_seed(rare[key])
    column = "accuracy" if kind is SCARCITY else kind.score
    rows = []
    for regime in sorted({regime for regime, _ in score}):
        settings = [s for n, s in score if n == regime]
        baselines = [s for s in settings if strategy[s] in kind.baselines]
        if not baselines:
            raise GanforgeError(
                f"no real-only baseline at {kind.describe(regime)}: keep one of {', '.join(kind.baselines)} "
                "in strategies"
            )
        best = max(baselines, key=lambda s: statistics.fmean(score[regime, s].values()))
        for setting in settings:
            mine, base = score[regime, setting], score[regime, best]
            differences = paired(mine, base)
            diff, low, high = paired_interval(differences)
            values = list(mine.values())
            row = kind.columns(regime) | {
                "strategy": strategy[setting],
                "setting": setting,
                "pairs": len(differences),
                column: statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "baseline": best,
                "difference": diff,
                "ci low": low,
                "ci high": high,
                "helps": low > 0,
            }
            if rare[regime, setting]:
                mine, base = rare[regime, setting], rare[regime, best]
                r_diff, r_low, r_high = paired_interval(paired(mine, base))
                row |= {
                    "rare-class recall": statistics.fmean(mine.values()),
                    "rare recall difference": r_diff,
                    "rare ci low": r_low,
                    "rare ci high": r_high,
                }
            rows.append(row)
    return rows


def gan_quality(gans: list[Row], kind: Kind = SCARCITY) -> list[Row]:
    """The GANs' sample quality per regime, averaged over their seeds: is a bad GAN to blame?"""
    by_regime: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for gan in gans:
        by_regime[kind.of(gan)].append(gan)
    rows = []
    for regime, all_runs in sorted(by_regime.items()):
        runs = [r for r in all_runs if r["quality"]]
        for r in all_runs:
            if not r["quality"]:
                where = kind.describe(regime)
                log.warning("the GAN of seed %s at %s recorded no sample quality", r["gan seed"], where)
        keys = sorted({k for r in runs for k in r["quality"]})
        rows.append(kind.columns(regime) | {"gan seeds": len(runs)} | {
            k: statistics.fmean(r["quality"][k] for r in runs if k in r["quality"]) for k in keys
        })  # fmt: skip
    return rows


def gan_classes(classes: list[Row], kind: Kind) -> list[Row]:
    """The GANs' quality per (regime, class), averaged over their seeds."""
    groups: dict[tuple[tuple[Any, ...], int], list[Row]] = defaultdict(list)
    for row in classes:
        groups[kind.of(row), int(row["class"])].append(row)
    skip = {"class", *JOB_KEYS}
    rows = []
    for (regime, c), runs in sorted(groups.items()):
        keys = [k for k in runs[0] if k not in skip]
        values = {k: [r[k] for r in runs if r.get(k) is not None] for k in keys}
        rows.append(kind.columns(regime) | {"class": c, "gan seeds": len(runs)} | {
            k: statistics.fmean(v) if v else None for k, v in values.items()
        })  # fmt: skip
    return rows


def plot(rows: list[Row], path: Path, kind: Kind = SCARCITY) -> Path:
    """The score against the regime, one line per strategy (its setting with the best mean over all
    regimes, chosen once, not per regime), error bars one standard deviation over pairs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    column = score_column(kind)
    overall: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        overall[r["setting"]].append(r[column])
    chosen: dict[str, str] = {}
    for r in rows:
        best = chosen.get(r["strategy"])
        if best is None or statistics.fmean(overall[r["setting"]]) > statistics.fmean(overall[best]):
            chosen[r["strategy"]] = r["setting"]
    groups = sorted({kind.of(r)[:-1] for r in rows})  # a long tail's profiles: a line style each
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for style, group in zip(itertools.cycle(("-", "--", ":", "-.")), groups):
        suffix = "".join(f" ({g})" for g in group if g != "exponential")
        for setting in chosen.values():
            points = sorted(
                (kind.of(r)[-1], r[column], r["std"])
                for r in rows
                if r["setting"] == setting and kind.of(r)[:-1] == group
            )
            if points:
                x, y, err = zip(*points, strict=True)
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, linestyle=style, label=setting + suffix)
    ax.set_xscale("log")
    ax.set_xticks(sorted({kind.of(r)[-1] for r in rows}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(kind.axis)
    ax.set_ylabel(f"real {kind.score}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def score_column(kind: Kind) -> str:
    """The curve's column for the score ("accuracy" for scarcity, as its first reports had it)."""
    return "accuracy" if kind is SCARCITY else kind.score


def print_table(rows: list[Row], title: str, kind: Kind = SCARCITY) -> None:
    column = score_column(kind)
    rare = any("rare-class recall" in r for r in rows)
    table = rich.table.Table(title=title)
    headers = ["per class" if kind is SCARCITY else "ratio", "setting", "pairs", column]
    headers += ["vs best real-only (95% CI)"] + ["rare-class recall", "vs best (95% CI)"] * rare
    for header in headers:
        table.add_column(header, justify="left" if header == "setting" else "right")
    for r in rows:
        diff = f"{r['difference']:+.4f} [{r['ci low']:+.4f}, {r['ci high']:+.4f}]"
        cells = [
            kind.label(kind.of(r)), r["setting"], str(r["pairs"]), f"{r[column]:.4f} ± {r['std']:.4f}",
            f"[green]{diff}[/green]" if r["helps"] else diff,
        ]  # fmt: skip
        if rare:
            if "rare-class recall" in r:
                rare_diff = (
                    f"{r['rare recall difference']:+.4f} [{r['rare ci low']:+.4f}, {r['rare ci high']:+.4f}]"
                )
                cells += [f"{r['rare-class recall']:.4f}", rare_diff]
            else:
                cells += ["-", "-"]
        table.add_row(*cells)
    rich.print(table)


def report(sweep_dir: Path) -> dict[str, Path] | None:
    """<kind>.csv, gan_quality.csv, gan_classes.csv, <kind>.png and the printed table (kind:
    scarcity or long_tail), for a sweep whose jobs ran the synthesize chain; None for any other sweep."""
    results, gans, classes = load_jobs(sweep_dir)
    if not results:
        return None
    kind = kind_of(gans)
    rows = curve(results, kind)
    print_table(
        rows,
        f"{kind.title} ({sweep_dir}): real {kind.score}, paired difference to the best real-only row",
        kind,
    )
    files = {
        "curve table": write_csv(rows, sweep_dir / f"{kind.name}.csv"),
        "GAN quality": write_csv(gan_quality(gans, kind), sweep_dir / "gan_quality.csv"),
        "curve plot": plot(rows, sweep_dir / f"{kind.name}.png", kind),
    }
    if classes:
        files["GAN per class"] = write_csv(gan_classes(classes, kind), sweep_dir / "gan_classes.csv")
    for name, path in files.items():
        log.info("%s: %s", name, path)
    return files


def log_wandb(files: dict[str, Path], project: str, entity: str | None) -> str | None:
    """The curve's tables and plot as one W&B run in the sweep directory; the `wandb sync` command if
    offline."""
    import wandb

    offline = wandb_offline()
    sweep_dir = files["curve table"].parent
    name = files["curve table"].stem
    run = wandb.init(
        project=project, entity=entity, job_type=name, name=f"{name}-{sweep_dir.name}",
        dir=str(sweep_dir), mode="offline" if offline else "online",
    )  # fmt: skip
    for key in ("curve table", "GAN quality", "GAN per class"):
        if key not in files:
            continue
        with files[key].open(newline="") as f:
            rows = list(csv.reader(f))
        run.log({key.replace(" ", "_").replace("curve", name): wandb.Table(columns=rows[0], data=rows[1:])})
    run.log({f"{name}_plot": wandb.Image(str(files["curve plot"]))})
    sync = f"wandb sync {run.settings.sync_dir}" if offline else None
    finish_wandb_run(run, exit_code=0)
    return sync


class ScarcityCurve(Callback):
    """Hydra callback: after a multirun over the synthesize chain, the scarcity (or long-tail) curve
    of its jobs (and a W&B run of it when the jobs logged to W&B)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            files = report(sweep_dir) if sweep_dir.is_dir() else None
        except Exception as err:  # Hydra would only warn; the jobs' results are kept either way
            log.error(
                "the curve of %s was not written (%s: %s); the jobs' results are kept, report them with "
                "python -m ganforge.scarcity %s", sweep_dir, type(err).__name__, err, sweep_dir,
            )  # fmt: skip
            return
        if files and "wandb" in (config.get("logger") or {}):
            sync = log_wandb(files, config.logger.wandb.project, config.logger.wandb.entity)
            if sync:
                log.info("W&B (offline): upload with: %s", sync)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ganforge.scarcity <sweep dir>`: the curve again, e.g. after a job was rerun or the
    regimes ran as separate multiruns into one sweep dir."""
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
