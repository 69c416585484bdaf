"""The scarcity curve: the paired interval on known numbers, the curve's pairing and baseline, the
files it writes, and the whole chain as one multirun on digits."""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import pytest

from ganforge.config import step_budget
from ganforge.downstream import LONG_TAIL, STRATEGIES
from ganforge.scarcity import LONG_TAIL as LONG_TAIL_CURVE
from ganforge.scarcity import curve, main, paired_interval, report
from tests.conftest import SMALL_NETWORKS


def test_paired_interval_on_known_numbers() -> None:
    mean, low, high = paired_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = 1.5811, t(0.975, 4) = 2.7764: half-width 2.7764 * 1.5811 / sqrt(5) = 1.9632
    assert mean == 3.0 and low == pytest.approx(1.0368, abs=1e-4) and high == pytest.approx(4.9632, abs=1e-4)
    assert paired_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    mean, low, high = paired_interval([0.2])
    assert mean == 0.2 and math.isnan(low) and math.isnan(high)


def results(size: int, setting: str, strategy: str, accuracies: dict[tuple[int, int], float]) -> list[dict]:
    return [
        {"real per class": size, "setting": setting, "strategy": strategy, "gan seed": g, "seed": s,
         "test accuracy": a}
        for (g, s), a in accuracies.items()
    ]  # fmt: skip


def test_the_curve_pairs_by_seeds_against_the_best_real_only_row() -> None:
    # seeds move accuracy a lot; the mixed row is exactly 0.01 above the augmented baseline in every pair
    base = {(0, 0): 0.60, (0, 1): 0.70, (1, 0): 0.80, (1, 1): 0.65}
    cas = {k: v - 0.2 for k, v in base.items() if k[0] == 0}  # one GAN seed only: 2 pairs
    rows = curve([
        *results(5, "real", "real", {k: v - 0.05 for k, v in base.items()}),
        *results(5, "real + augmentation", "real_augmented", base),
        *results(5, "real + synthetic x1", "mixed", {k: v + 0.01 for k, v in base.items()}),
        *results(5, "synthetic only (CAS)", "synthetic_only", cas),
    ])  # fmt: skip
    by_setting = {r["setting"]: r for r in rows}
    assert {r["baseline"] for r in rows} == {"real + augmentation"}  # the higher real-only mean
    mixed = by_setting["real + synthetic x1"]
    assert mixed["pairs"] == 4 and mixed["difference"] == pytest.approx(0.01)
    assert mixed["ci low"] == pytest.approx(0.01) and mixed["helps"]  # paired: the seeds' spread cancels
    cas = by_setting["synthetic only (CAS)"]
    assert cas["pairs"] == 2 and cas["difference"] == pytest.approx(-0.2) and not cas["helps"]
    assert by_setting["real"]["difference"] == pytest.approx(-0.05)


def test_a_real_only_row_every_gan_job_repeats_counts_once_per_downstream_seed() -> None:
    # two GAN jobs ran the same real-only classifiers on the same real subset: identical to the digit
    plain = {(g, s): 0.90 + 0.01 * s for g in (0, 1) for s in range(5)}
    augmented = {(g, s): 0.95 + 0.01 * s + 0.002 * (s % 2) for g in (0, 1) for s in range(5)}
    mixed = {(g, s): augmented[g, s] - 0.003 * (g + 1) for g in (0, 1) for s in range(5)}
    other_subsets = {(g, s): plain[g, s] + 0.001 * g for g in (0, 1) for s in range(5)}  # differ per job
    rows = curve([
        *results(5, "real", "real", plain),
        *results(5, "real + augmentation", "real_augmented", augmented),
        *results(5, "real + synthetic x1", "mixed", mixed),
        *results(10, "real", "real", other_subsets),
        *results(10, "real + augmentation", "real_augmented", augmented),
    ])  # fmt: skip
    by_setting = {(r["real per class"], r["setting"]): r for r in rows}
    real = by_setting[5, "real"]
    assert real["baseline"] == "real + augmentation" and real["pairs"] == 5  # not 5 pairs twice
    once = paired_interval([plain[0, s] - augmented[0, s] for s in range(5)])
    assert (real["difference"], real["ci low"], real["ci high"]) == pytest.approx(once)
    assert real["std"] == pytest.approx(statistics.stdev(plain[0, s] for s in range(5)))
    fill = by_setting[5, "real + synthetic x1"]  # each GAN's row against the one baseline per seed
    assert fill["pairs"] == 10 and fill["difference"] == pytest.approx(-0.0045)
    assert by_setting[10, "real"]["pairs"] == 10  # values that differ between jobs stay apart


def write_job(
    job: Path, size: int, gan_seed: int, accuracy: dict[str, float], more: dict[str, float] | None = None
) -> None:
    (job / "augment").mkdir(parents=True)
    quality = {"fid": 10.0 / size, "class_accuracy": 0.9, "class_diversity": 0.5} | (more or {})
    (job / "augment" / "gan.json").write_text(
        json.dumps({"real per class": size, "gan seed": gan_seed, "quality": quality})
    )
    with (job / "augment" / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([
            "strategy", "setting", "value", "real images", "synthetic images", "seed", "test accuracy",
            "balanced accuracy", "rare-class recall",
        ])  # fmt: skip
        for seed in (0, 1):  # a balanced set: augment.py leaves the rare-class recall empty
            for setting, a in accuracy.items():
                row = [setting.split()[0], setting, "", 10 * size, 0, seed, a + 0.01 * seed, a, ""]
                writer.writerow(row)


def test_report_writes_the_table_the_gan_quality_and_the_plot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for job, (size, gan_seed) in enumerate([(5, 0), (5, 1), (10, 0), (10, 1)]):
        accuracy = {"real": 0.5 + size / 100, "mixed x1": 0.52 + size / 100}
        more = {"mifid": 3.0} if size == 10 else None  # a metric added after the size-5 jobs ran
        write_job(tmp_path / str(job), size, gan_seed, accuracy, more)
    # a GAN that recorded no quality (a job restarted after its training, before the callback kept it)
    write_job(tmp_path / "4", 10, 2, {"real": 0.6, "mixed x1": 0.62})
    (tmp_path / "4" / "augment" / "gan.json").write_text(
        json.dumps({"real per class": 10, "gan seed": 2, "quality": {}})
    )
    with caplog.at_level(logging.WARNING, logger="ganforge.scarcity"):
        files = report(tmp_path)
    assert caplog.messages == ["the GAN of seed 2 at real per class 10 recorded no sample quality"]
    assert files is not None
    rows = list(csv.DictReader(files["curve table"].open()))
    assert [(r["real per class"], r["setting"], r["pairs"]) for r in rows] == [
        ("5", "real", "2"),
        ("5", "mixed x1", "4"),
        ("10", "real", "2"),
        ("10", "mixed x1", "6"),
    ]  # fmt: skip  (every job's real row is the same two measurements: they count once)
    quality = list(csv.DictReader(files["GAN quality"].open()))
    assert [(q["real per class"], q["gan seeds"], float(q["fid"]), q["mifid"]) for q in quality] == [
        ("5", "2", 2.0, ""),
        ("10", "2", 1.0, "3.0"),
    ]
    assert files["curve plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report(tmp_path / "0" / "augment") is None  # not a sweep over the chain: nothing


def test_the_report_command_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # e.g. sizes run as two multiruns into one sweep dir: the command reports them together
    write_job(tmp_path / "per_class=5,seed=0", 5, 0, {"real": 0.6, "mixed x1": 0.62})
    write_job(tmp_path / "per_class=10,seed=0", 10, 0, {"real": 0.7, "mixed x1": 0.71})
    assert main([str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "scarcity.csv").open()))
    assert sorted({r["real per class"] for r in rows}) == ["10", "5"]
    assert (tmp_path / "scarcity.png").is_file()
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, says in [(tmp_path / "missing", "is not a directory"), (empty, "has no */augment/gan.json")]:
        with pytest.raises(SystemExit) as exit_:
            main([str(bad)])
        assert exit_.value.code != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err


def test_the_gan_budget_follows_the_data_size() -> None:
    table = {5: 1000, 10: 1500, 60: 3000}
    assert [step_budget(table, n) for n in (1, 5, 9, 10, 59, 60, 600)] == [
        1000,
        1000,
        1000,
        1500,
        1500,
        3000,
        3000,
    ]


@pytest.mark.slow
def test_the_scarcity_curve_in_one_multirun(tmp_path: Path, run_script) -> None:
    args = [
        "hydra.mode=MULTIRUN", "experiment=scarcity_digits", "data.train_per_class=5,10", "seed=0",
        "data.image_size=16",
        "scarcity.g_steps={5:4,10:4}", *SMALL_NETWORKS["cdcgan"], "logger=csv", "extras.print_config=false",
        "metrics.num_samples=200", "metrics.num_reference=500", "metrics.classifier.epochs=2",
        "metrics.classifier.width=16", "callbacks.sample_quality.every_n_g_steps=4",
        "callbacks.sample_grid.every_n_g_steps=4", "synthesize.export.num_samples=100",
        "synthesize.downstream.seeds=[0,1]", "synthesize.downstream.ratios=[1]",
        "synthesize.downstream.weights=[0.5]", "synthesize.downstream.classifier.steps=2",
        "synthesize.downstream.classifier.width=8", "data.batch_size=16",
    ]  # fmt: skip
    result = run_script(args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = {job.name for job in sweep.iterdir() if (job / "augment" / "gan.json").is_file()}
    assert jobs == {"per_class=5,seed=0", "per_class=10,seed=0"}  # named: splittable over processes
    rows = list(csv.DictReader((sweep / "scarcity.csv").open()))
    assert {r["real per class"] for r in rows} == {"5", "10"}
    assert all(r["pairs"] == "2" for r in rows)  # 1 GAN seed x 2 downstream seeds
    assert {r["strategy"] for r in rows} == set(STRATEGIES) - set(LONG_TAIL)  # the default list
    assert (sweep / "scarcity.png").is_file() and (sweep / "gan_quality.csv").is_file()
    assert "Scarcity curve" in result.stdout


def write_long_tail_job(
    job: Path,
    ratio: float,
    gan_seed: int,
    scores: dict[str, tuple[str, float, float]],
    profile: str | None = None,  # None: a record from before profiles were (an exponential tail)
) -> None:
    """A long-tail job: per setting (strategy, balanced accuracy, rare-class recall) at 2 seeds."""
    (job / "augment").mkdir(parents=True)
    quality = {"fid": ratio / 10, "rare class accuracy": 0.5 + gan_seed / 10}
    record = {"real per class": 1000, "imbalance ratio": ratio, "gan seed": gan_seed, "quality": quality}
    if profile is not None:
        record["imbalance profile"] = profile
    (job / "augment" / "gan.json").write_text(json.dumps(record))
    columns = ["strategy", "setting", "value", "real images", "synthetic images", "seed", "test accuracy",
               "balanced accuracy", "rare-class recall", "synthetic filter"]  # fmt: skip
    with (job / "augment" / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for seed in (0, 1):
            for setting, (strategy, balanced, rare) in scores.items():
                writer.writerow(
                    [strategy, setting, "", 100, 0, seed, 0.9, balanced + seed / 10, rare, "none"]
                )
    with (job / "augment" / "gan_classes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "real training images", "class accuracy", "fid"])
        writer.writerows([[c, 100 // (c + 1), 0.9 - c / 10 + gan_seed / 10, 5 + c] for c in range(2)])


def test_a_long_tail_sweep_reports_balanced_accuracy_and_rare_recall_per_ratio(tmp_path: Path) -> None:
    scores = {
        "real": ("real", 0.80, 0.60),
        "real, re-sampled + augmentation": ("resampled_augmented", 0.90, 0.85),  # the best real-only row
        "real + synthetic fill": ("filled_augmented", 0.91, 0.89),
    }
    for ratio in (10, 100):
        for gan_seed in (0, 1):
            write_long_tail_job(tmp_path / f"ratio={ratio},seed={gan_seed}", ratio, gan_seed, scores)
    files = report(tmp_path)
    assert files is not None and files["curve table"].name == "long_tail.csv"
    rows = list(csv.DictReader(files["curve table"].open()))
    assert [(r["imbalance ratio"], r["setting"], r["pairs"]) for r in rows] == [
        (str(ratio), setting, "4" if "synthetic" in setting else "2")  # real-only: the same in both jobs
        for ratio in (10, 100)
        for setting in scores
    ]
    fill = rows[2]
    assert fill["baseline"] == "real, re-sampled + augmentation"
    assert float(fill["balanced accuracy"]) == pytest.approx(0.96)  # 0.91, 0.91, 1.01, 1.01
    assert float(fill["difference"]) == pytest.approx(0.01) and fill["helps"] == "True"
    assert float(fill["rare-class recall"]) == pytest.approx(0.89)
    assert float(fill["rare recall difference"]) == pytest.approx(0.04)
    quality = list(csv.DictReader(files["GAN quality"].open()))
    assert [(q["imbalance ratio"], float(q["rare class accuracy"])) for q in quality] == [
        ("10", pytest.approx(0.55)), ("100", pytest.approx(0.55)),
    ]  # fmt: skip
    classes = list(csv.DictReader(files["GAN per class"].open()))
    summary = [
        (c["imbalance ratio"], c["class"], c["gan seeds"], float(c["class accuracy"])) for c in classes
    ]
    assert summary == [
        ("10", "0", "2", pytest.approx(0.95)), ("10", "1", "2", pytest.approx(0.85)),
        ("100", "0", "2", pytest.approx(0.95)), ("100", "1", "2", pytest.approx(0.85)),
    ]  # fmt: skip
    assert files["curve plot"].name == "long_tail.png" and files["curve plot"].stat().st_size > 0


def test_exponential_and_step_tails_in_one_sweep_are_separate_regimes(tmp_path: Path) -> None:
    exponential = {
        "real, re-sampled + augmentation": ("resampled_augmented", 0.90, 0.85),
        "real + synthetic fill": ("filled_augmented", 0.91, 0.89),
    }
    step = {  # another best real-only row: each regime is judged against its own
        "real, re-sampled + augmentation": ("resampled_augmented", 0.70, 0.40),
        "real, logit-adjusted + augmentation": ("logit_adjusted_augmented", 0.75, 0.50),
        "real + synthetic fill": ("filled_augmented", 0.72, 0.45),
    }
    for gan_seed in (0, 1):
        write_long_tail_job(
            tmp_path / f"profile=exponential,ratio=100,seed={gan_seed}", 100, gan_seed, exponential
        )
        write_long_tail_job(tmp_path / f"profile=step,ratio=100,seed={gan_seed}", 100, gan_seed, step, "step")
    files = report(tmp_path)
    assert files is not None
    rows = list(csv.DictReader(files["curve table"].open()))
    regimes = [(r["imbalance profile"], r["imbalance ratio"], r["setting"], r["baseline"]) for r in rows]
    assert regimes == [("exponential", "100", s, "real, re-sampled + augmentation") for s in exponential] + [
        ("step", "100", s, "real, logit-adjusted + augmentation") for s in step
    ]
    assert float(rows[-1]["difference"]) == pytest.approx(-0.03)
    quality = list(csv.DictReader(files["GAN quality"].open()))
    assert [(q["imbalance profile"], q["gan seeds"]) for q in quality] == [
        ("exponential", "2"),
        ("step", "2"),
    ]
    classes = list(csv.DictReader(files["GAN per class"].open()))
    assert [(c["imbalance profile"], c["class"]) for c in classes] == [
        ("exponential", "0"), ("exponential", "1"), ("step", "0"), ("step", "1"),
    ]  # fmt: skip
    assert files["curve plot"].stat().st_size > 0
    assert [LONG_TAIL_CURVE.label(regime) for regime in [("exponential", 10), ("step", 100)]] == [
        "10",
        "100 (step)",
    ]
    assert LONG_TAIL_CURVE.describe(("step", 100)) == "imbalance ratio 100 (step)"


def test_a_report_that_fails_at_the_end_of_a_sweep_says_how_to_rerun_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from omegaconf import OmegaConf

    from ganforge.scarcity import ScarcityCurve

    write_job(tmp_path / "per_class=5,seed=0", 5, 0, {"mixed x1": 0.6})  # no real-only row to compare to
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "logger": None})
    with caplog.at_level(logging.ERROR, logger="ganforge.scarcity"):
        ScarcityCurve().on_multirun_end(config)  # Hydra would turn an exception into a bare warning
    assert caplog.messages == [
        f"the curve of {tmp_path} was not written (GanforgeError: no real-only baseline at real per class 5: "
        f"keep one of real, real_augmented in strategies); the jobs' results are kept, report them with "
        f"python -m ganforge.scarcity {tmp_path}"
    ]
