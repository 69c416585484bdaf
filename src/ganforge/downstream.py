"""The ways synthetic data can enter the downstream classifier: the strategies `augment.py` compares.

Every row trains a fresh SmallCNN from the same seed for the same number of optimizer steps on the
same scarce real set; only what those steps see differs:

- `real`, `real_augmented`: the real images, plain or through standard augmentation;
- `mixed`, `mixed_augmented`: real + synthetic images at each ratio (synthetic per real image);
- `filtered`: like `mixed`, from the synthetic images that the real-only classifier of the same seed
  assigns to their requested class with probability >= `filter_threshold`;
- `weighted`: every step a real and a synthetic batch, loss = CE(real) + lambda * CE(synthetic);
- `pretrained`: synthetic images for `pretrain_fraction` of the steps, then real ones;
- `synthetic_only`: synthetic images alone (the Classification Accuracy Score);
- `reweighted`, `resampled`, `logit_adjusted` (each also `_augmented`): the real images against class
  imbalance (`ganforge.class_balance`): effective-number loss weights, class-balanced sampling, logit
  adjustment. On a long-tailed set (`data.long_tail`) the best of them is the baseline to beat;
- `filled`, `filled_augmented`: real images plus synthetic ones of each class that has fewer than
  `fill_target` times the largest class's count, up to that count; optionally trained with one of the
  real-only methods on top (`fill_balancing`, its class counts those of the filled set).

Each strategy with synthetic images runs once per entry of `synthetic_filters`: `none` (every exported
sample) and `drs` (the samples that discriminator rejection sampling keeps, `ganforge.rejection_sampling`).

Every row reports accuracy on the real test set, its balanced accuracy (the mean per-class recall)
and, when the real training set is imbalanced, the mean recall of its rarer half of the classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from ganforge.class_balance import (
    Balancing,
    class_counts,
    effective_number_weights,
    logit_adjustments,
    per_class_recall,
    rare_classes,
    resampling_weights,
)
from ganforge.datamodules.base import to_signed_unit
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import SmallCNN, fit_classifier, predictions

log = logging.getLogger(__name__)

BALANCED = {"reweighted": "re-weighted", "resampled": "re-sampled", "logit_adjusted": "logit-adjusted"}
IMBALANCE = tuple(f"{method}{suffix}" for method in BALANCED for suffix in ("", "_augmented"))  # real only
STRATEGIES = (
    "real",
    "real_augmented",
    "mixed",
    "mixed_augmented",
    "filtered",
    "weighted",
    "pretrained",
    "synthetic_only",
    *IMBALANCE,
    "filled",
    "filled_augmented",
)
LONG_TAIL = (*IMBALANCE, "filled", "filled_augmented")  # for data.long_tail; not in the default list
REAL_ONLY = ("real", "real_augmented", *IMBALANCE)
FILTERS = {"none": "", "drs": " (DRS)"}  # synthetic_filters, and what each adds to a row's name

Images = tuple[Tensor, Tensor]  # uint8 images [N, C, H, W], class labels [N]
Result = dict[str, Any]


@dataclass
class Downstream:
    """One data set's downstream experiment: the scarce real set, the synthetic pools (by filter), the
    real test set, the classifier's settings and the standard augmentation."""

    real: Images
    synthetic: dict[str, Images]
    test: Dataset
    num_classes: int
    classifier: dict[str, Any]  # width, feature_dim, steps, lr, batch_size, image_size
    device: torch.device
    augmentation: Callable[[Tensor], Tensor] | None = None

    def fit(
        self,
        seed: int,
        data: Images,
        *,
        augmented: bool = False,
        steps: int | None = None,
        weighted: tuple[Images, float] | None = None,
        model: SmallCNN | None = None,
        balancing: Balancing | None = None,
    ) -> SmallCNN:
        net = self.classifier
        if model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = SmallCNN(self.real[0].shape[1], self.num_classes, net["width"], net["feature_dim"])
        steps = net["steps"] if steps is None else steps
        batches = -(-len(data[1]) // net["batch_size"])
        return fit_classifier(
            model, TensorDataset(*data), self.device, epochs=-(-steps // batches), lr=net["lr"],
            batch_size=net["batch_size"], seed=seed, max_steps=steps,
            transform=self.augmentation if augmented else None,
            weighted=None if weighted is None else (TensorDataset(*weighted[0]), weighted[1]),
            balancing=balancing,
        )  # fmt: skip

    def rows(
        self,
        strategy: str,
        seed: int,
        settings: dict[str, Any],
        baseline: SmallCNN | None,
        fake: Images | None = None,
    ) -> Iterator[tuple[str, float | None, int, SmallCNN]]:
        """(setting, ratio or weight, synthetic images seen, trained model) for each row of `strategy`,
        its synthetic images drawn from `fake`."""
        real = self.real
        if strategy in ("real", "real_augmented"):
            augmented = strategy == "real_augmented"
            yield (
                ("real + augmentation" if augmented else "real"),
                None,
                0,
                self.fit(seed, real, augmented=augmented),
            )
            return
        method = strategy.removesuffix("_augmented")
        if method in BALANCED:
            augmented = strategy != method
            model = self.fit(seed, real, augmented=augmented, balancing=self.balancing(method, settings))
            yield f"real, {BALANCED[method]}" + (" + augmentation" if augmented else ""), None, 0, model
            return
        assert fake is not None
        if strategy in ("mixed", "mixed_augmented", "filtered"):
            pool, label = fake, "synthetic"
            if strategy == "filtered":
                assert baseline is not None
                tau = settings["filter_threshold"]
                pool, label = (
                    confident(baseline, fake, tau, self.device),
                    f"filtered synthetic (p >= {tau:g})",
                )
            augmented = strategy == "mixed_augmented"
            for ratio in sorted(settings["ratios"]):
                picked = draw(pool, round(ratio * len(real[1])), seed, strict=strategy != "filtered")
                mixed = (torch.cat([real[0], picked[0]]), torch.cat([real[1], picked[1]]))
                name = f"real + {label} x{ratio:g}" + (" + augmentation" if augmented else "")
                yield name, ratio, len(picked[1]), self.fit(seed, mixed, augmented=augmented)
        elif strategy == "weighted":
            for weight in settings["weights"]:
                model = self.fit(seed, real, weighted=(fake, weight))
                yield f"real + {weight:g} x synthetic loss", weight, len(fake[1]), model
        elif strategy == "pretrained":
            share = settings["pretrain_fraction"]
            first = round(share * self.classifier["steps"])
            model = self.fit(seed, fake, steps=first)
            model = self.fit(seed, real, steps=self.classifier["steps"] - first, model=model)
            yield f"synthetic ({share:.0%} of steps) then real", share, len(fake[1]), model
        elif strategy in ("filled", "filled_augmented"):
            target, method = settings["fill_target"], settings["fill_balancing"]
            picked = fill_up(real[1], fake, target, seed, self.num_classes)
            data = (torch.cat([real[0], picked[0]]), torch.cat([real[1], picked[1]]))
            balancing = None if method is None else self.balancing(method, settings, data[1])
            augmented = strategy == "filled_augmented"
            name = f"real + synthetic fill to {target:g} x n_max" + (
                f", {BALANCED[method]}" if method else ""
            )
            name += " + augmentation" if augmented else ""
            yield name, target, len(picked[1]), self.fit(seed, data, augmented=augmented, balancing=balancing)
        elif strategy == "synthetic_only":
            yield "synthetic only (CAS)", None, len(fake[1]), self.fit(seed, fake)
        else:
            raise GanforgeError(
                f"unknown downstream strategy {strategy!r}; choose from {', '.join(STRATEGIES)}"
            )

    def balancing(self, method: str, settings: dict[str, Any], labels: Tensor | None = None) -> Balancing:
        """`method`'s weights, sampling or offsets for a training set with `labels` (the real ones)."""
        labels = self.real[1] if labels is None else labels
        counts = class_counts(labels, self.num_classes)
        if method == "reweighted":
            return Balancing(class_weights=effective_number_weights(counts, settings["class_balance_beta"]))
        if method == "resampled":
            return Balancing(sample_weights=resampling_weights(labels, self.num_classes))
        return Balancing(logit_offsets=logit_adjustments(counts, settings["logit_adjustment_tau"]))

    def runs(self, strategies: list[str]) -> Iterator[tuple[str, tuple[str, Images | None]]]:
        """(strategy, (filter, synthetic pool)): the real-only strategies once, the others per pool."""
        for strategy in strategies:
            if strategy in REAL_ONLY:
                yield strategy, ("none", None)
            else:
                yield from ((strategy, pool) for pool in self.synthetic.items())

    def scores(self, model: SmallCNN, rare: list[int]) -> dict[str, float | None]:
        """Test accuracy, balanced accuracy and the rare classes' mean recall (None when balanced)."""
        predicted, labels = predictions(model, self.test, self.device)
        recall = per_class_recall(predicted, labels, self.num_classes)
        return {
            "test accuracy": (predicted == labels).double().mean().item(),
            "balanced accuracy": recall.nanmean().item(),
            "rare-class recall": recall[rare].mean().item() if rare else None,
        }

    def run(self, strategies: list[str], seeds: list[int], settings: dict[str, Any]) -> list[Result]:
        """One result per (row, seed); the real-only classifier of each seed is the filter's judge."""
        results = []
        rare = rare_classes(class_counts(self.real[1], self.num_classes))
        for seed in seeds:
            baseline = None
            order = sorted(strategies, key=lambda s: s != "real")  # the judge first
            if "filtered" in strategies and "real" not in strategies:
                order = ["real", *order]
            for strategy, (kept, fake) in self.runs(order):
                for setting, value, n_fake, model in self.rows(strategy, seed, settings, baseline, fake):
                    if strategy == "real":
                        baseline = model
                        if strategy not in strategies:
                            continue
                    setting += FILTERS[kept]
                    results.append({
                        "strategy": strategy,
                        "setting": setting,
                        "value": value,
                        "real images": 0 if strategy == "synthetic_only" else len(self.real[1]),
                        "synthetic images": n_fake,
                        "seed": seed,
                        **self.scores(model, rare),
                        "synthetic filter": kept if fake is not None else None,
                    })  # fmt: skip
                    log.info("%s, seed %d: test accuracy %.4f", setting, seed, results[-1]["test accuracy"])
        return results


def check(settings: dict[str, Any], has_synthetic: bool) -> list[str]:
    """The strategies to run, after refusing settings that could only fail later; without a
    synthetic set, the real-only ones."""
    strategies = list(settings["strategies"])
    if settings.get("synthetic_only") is not None:  # the key before strategies existed
        log.warning("synthetic_only is deprecated: list synthetic_only (or leave it out) in strategies")
        strategies = [s for s in strategies if s != "synthetic_only"] + ["synthetic_only"] * bool(
            settings["synthetic_only"]
        )
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise GanforgeError(f"strategies={strategies}: choose from {', '.join(STRATEGIES)}")
    if not 0.0 <= settings["filter_threshold"] <= 1.0:
        raise GanforgeError(
            f"filter_threshold is a probability in [0, 1] (e.g. 0.9), got {settings['filter_threshold']}"
        )
    if any(r <= 0 for r in settings["ratios"]):
        raise GanforgeError(
            f"ratios are synthetic images per real image and must be positive, got {settings['ratios']}"
        )
    if any(w < 0 for w in settings["weights"]):
        raise GanforgeError(
            f"weights are the synthetic loss's weight and must be >= 0, got {settings['weights']}"
        )
    if not 0.0 < settings["pretrain_fraction"] < 1.0:
        raise GanforgeError(
            f"pretrain_fraction is the share of steps on synthetic images, in (0, 1) (e.g. 0.5), got "
            f"{settings['pretrain_fraction']}"
        )
    size = settings["classifier"].get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise GanforgeError(
            f"classifier.image_size is the classifier's input size in pixels, >= 8 (e.g. 16), or null for "
            f"the data's size; got {size!r}"
        )
    if not 0.0 <= settings["class_balance_beta"] < 1.0:
        raise GanforgeError(
            "class_balance_beta is in [0, 1) (0: plain cross-entropy, e.g. 0.9999), got "
            f"{settings['class_balance_beta']}"
        )
    if settings["logit_adjustment_tau"] < 0:
        raise GanforgeError(
            f"logit_adjustment_tau must be >= 0 (e.g. 1), got {settings['logit_adjustment_tau']}"
        )
    if not 0.0 < settings["fill_target"] <= 1.0:
        raise GanforgeError(
            f"fill_target is a share of the largest class's count, in (0, 1] (1: fill every class up to "
            f"it), got {settings['fill_target']}"
        )
    if settings["fill_balancing"] not in (None, *BALANCED):
        raise GanforgeError(
            f"fill_balancing must be null or one of {', '.join(BALANCED)}, got {settings['fill_balancing']!r}"
        )
    filters = list(settings["synthetic_filters"])
    if not filters or len(set(filters)) < len(filters) or not set(filters) <= set(FILTERS):
        raise GanforgeError(
            f"synthetic_filters={filters}: list each of {', '.join(FILTERS)} at most once, at least one"
        )
    if not 0 <= settings["drs_percentile"] <= 100:
        raise GanforgeError(
            f"drs_percentile is a percentile in [0, 100] (e.g. 50), got {settings['drs_percentile']}"
        )
    if not has_synthetic:
        real_only = [s for s in strategies if s in REAL_ONLY]
        if real_only != strategies:
            log.info("no synthetic_dir: running the real-only strategies (%s) alone", ", ".join(real_only))
        strategies = real_only
    return strategies


def check_fill(
    settings: dict[str, Any], strategies: list[str], real: Images, pools: dict[str, Images], classes: int
) -> None:
    """Refuse, before any training, a fill that needs more synthetic images of a class than a pool has."""
    if {"filled", "filled_augmented"} & set(strategies):
        for kept, pool in pools.items():
            fill_up(real[1], pool, settings["fill_target"], 0, classes, describe_pool(kept, settings))


def check_ratios(
    settings: dict[str, Any], strategies: list[str], n_real: int, pools: dict[str, Images]
) -> None:
    """Refuse, before any training, a ratio that needs more synthetic images than a pool has."""
    if not {"mixed", "mixed_augmented"} & set(strategies) or not settings["ratios"]:
        return
    ratio = max(settings["ratios"])
    for kept, pool in pools.items():
        if round(ratio * n_real) > len(pool[1]):
            raise GanforgeError(
                f"ratio {ratio:g} needs {round(ratio * n_real)} synthetic images ({n_real} real), "
                f"{describe_pool(kept, settings)} has {len(pool[1])}; export more (generate.py "
                f"num_samples) or lower the ratios"
            )


def describe_pool(kept: str, settings: dict[str, Any]) -> str:
    """How an error names a pool: with the setting that would make a filtered one larger."""
    if kept == "drs":
        return (
            f"the synthetic set after DRS (lower drs_percentile={settings['drs_percentile']:g} to keep more)"
        )
    return "the synthetic set"


def fill_up(
    real_labels: Tensor,
    pool: Images,
    target: float,
    seed: int,
    num_classes: int,
    what: str = "the synthetic set",
) -> Images:
    """Synthetic images that bring every class to `target` x the largest real class's count: the
    shortfall of each class, a seeded random choice of the pool's images of it."""
    counts = class_counts(real_labels, num_classes)
    goal = round(target * int(counts.max()))
    picks = []
    for c in range(num_classes):
        need = max(0, goal - int(counts[c]))
        of_class = (pool[1] == c).nonzero().flatten()
        if need > len(of_class):
            raise GanforgeError(
                f"filling class {c} to {goal} images (fill_target={target:g}) needs {need} synthetic images "
                f"of it, {what} has {len(of_class)}; export more (generate.py num_samples) or lower "
                "fill_target"
            )
        order = torch.randperm(len(of_class), generator=torch.Generator().manual_seed(seed * 1000 + c))
        picks.append(of_class[order[:need]])
    chosen = torch.cat(picks)
    return pool[0][chosen], pool[1][chosen]


def draw(pool: Images, k: int, seed: int, strict: bool = True) -> Images:
    """`k` images of `pool`, a seeded random choice; all of it (with a warning) when it has fewer and
    `strict` is off."""
    if k > len(pool[1]):
        if strict:
            raise GanforgeError(f"{k} synthetic images asked for, the synthetic set has {len(pool[1])}")
        log.warning(
            "only %d synthetic images pass the filter, %d asked for: using all of them", len(pool[1]), k
        )
        k = len(pool[1])
    order = torch.randperm(len(pool[1]), generator=torch.Generator().manual_seed(seed))[:k]
    return pool[0][order], pool[1][order]


@torch.no_grad()
def confidences(model: nn.Module, images: Images, device: torch.device, batch_size: int = 512) -> Tensor:
    """The probability `model` gives each image's own label."""
    model.eval()
    out = []
    for x, y in zip(images[0].split(batch_size), images[1].split(batch_size), strict=True):
        p = model(to_signed_unit(x.to(device))).softmax(1)
        out.append(p.gather(1, y.to(device)[:, None]).squeeze(1).cpu())
    return torch.cat(out)


def confident(model: nn.Module, images: Images, tau: float, device: torch.device) -> Images:
    """The images whose own label gets probability >= `tau` from `model`."""
    keep = confidences(model, images, device) >= tau
    log.info("filter p >= %g keeps %d of %d synthetic images", tau, int(keep.sum()), len(keep))
    return images[0][keep], images[1][keep]
