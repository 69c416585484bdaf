"""The metrics computed on a feature network's outputs: FID always, and KID, IS, precision/recall,
MiFID, class coverage, within-class diversity and class accuracy when asked or when they apply.

Each metric is one class with the same five methods (`FeatureMetric`), and `FEATURE_METRICS` says
when it is on: adding a metric is one class and one line there (and its flag in conf/metrics/).
Features are extracted once per image and shared by every metric; the real data enters as its
cached features and class logits (`set_reference`), from which each metric builds its statistics.

Distributed use: every rank updates with its own generated samples and every rank calls
`compute()` (torchmetrics sums or gathers the states). The real statistics must count once:
summed ones live on rank 0 (zeros elsewhere) and gathered ones are sharded over the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from ganforge.errors import GanforgeError


class FeatureMetric(Protocol):
    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        """Install the real data (all of it, on every rank); called once, before any update."""

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        """Generated samples; `labels`: the classes a conditional generator was asked for."""

    def compute(self) -> dict[str, Tensor]: ...

    def reset(self) -> None:
        """Forget generated samples; the real data stays."""

    def check(self, num_samples: int, num_reference: int) -> None:
        """Refuse sample counts the metric cannot work with (instead of NaN or a late crash)."""


class PassThrough(nn.Module):
    """Lets torchmetrics consume features we already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def shard(features: Tensor, rank: int, world_size: int) -> list[Tensor]:
    """This rank's share of gathered real features: after the all-gather they are all there once."""
    return [features[rank::world_size]]


class FID(nn.Module):
    def __init__(self, num_features: int, **_: Any) -> None:
        super().__init__()
        self.metric = FrechetInceptionDistance(feature=PassThrough(num_features), reset_real_features=False)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        if rank == 0:  # the real sums count once
            self.metric.update(features, real=True)

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.metric.update(features, real=False)

    def compute(self) -> dict[str, Tensor]:
        fid = self.metric.compute()
        if not math.isfinite(fid):
            raise FloatingPointError("FID is not finite: generated samples contain NaN/inf")
        return {"fid": fid}

    def reset(self) -> None:
        self.metric.reset()

    def check(self, num_samples: int, num_reference: int) -> None:
        check_fid_counts(num_samples, num_reference)


def check_fid_counts(num_samples: int, num_reference: int) -> None:
    if num_samples < 2 or num_reference < 2:
        raise GanforgeError(
            f"FID needs at least 2 generated and 2 reference samples, got metrics.num_samples="
            f"{num_samples} and {num_reference} reference samples; raise metrics.num_samples / "
            "metrics.num_reference"
        )


class Seeded(nn.Module):
    """A metric that draws random subsets in `compute`: reproducible, and training's RNG untouched."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def compute(self) -> dict[str, Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.seeded_compute()

    def seeded_compute(self) -> dict[str, Tensor]:
        raise NotImplementedError


class KID(Seeded):
    def __init__(self, num_features: int, kid_subset_size: int, seed: int, **_: Any) -> None:
        super().__init__(seed)
        self.subset_size = kid_subset_size
        self.metric = KernelInceptionDistance(
            feature=PassThrough(num_features), subset_size=kid_subset_size, reset_real_features=False
        )

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        self.metric.real_features = shard(features, rank, world_size)

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.metric.update(features, real=False)

    def seeded_compute(self) -> dict[str, Tensor]:
        kid, kid_std = self.metric.compute()
        return {"kid": kid, "kid_std": kid_std}

    def reset(self) -> None:
        self.metric.reset()

    def check(self, num_samples: int, num_reference: int) -> None:
        if min(num_samples, num_reference) < self.subset_size:
            raise GanforgeError(
                f"KID draws subsets of metrics.kid_subset_size={self.subset_size} samples, more than the "
                f"{min(num_samples, num_reference)} available; lower it or raise metrics.num_samples"
            )


class IS(Seeded):
    def __init__(self, num_classes: int, is_splits: int, seed: int, **_: Any) -> None:
        super().__init__(seed)
        self.splits = is_splits
        self.metric = InceptionScore(feature=PassThrough(num_classes), splits=is_splits)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        pass  # the score needs no real data

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.metric.update(logits)

    def seeded_compute(self) -> dict[str, Tensor]:
        score, std = self.metric.compute()
        return {"is": score, "is_std": std}

    def reset(self) -> None:
        self.metric.reset()

    def check(self, num_samples: int, num_reference: int) -> None:
        if num_samples < 2 * self.splits:
            raise GanforgeError(
                f"IS splits {num_samples} samples into metrics.is_splits={self.splits} groups; "
                f"use at least {2 * self.splits} samples or fewer splits"
            )


class PrecisionRecall(Metric):
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's support is the union of
    balls reaching every sample's k-th nearest neighbour in that set. Precision: the share of
    generated samples inside the real support (are they realistic?); recall: the share of real
    samples inside the generated support (is the data's variety there?)."""

    full_state_update = False

    def __init__(self, precision_recall_k: int = 3, **_: Any) -> None:
        super().__init__()
        self.k = precision_recall_k
        self.add_state("fake", [], dist_reduce_fx="cat")
        self.real = torch.zeros(0)
        self.real_radii = torch.zeros(0)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        self.real = features.float()
        self.real_radii = knn_radii(self.real, self.k)

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.fake.append(features.float())

    def compute(self) -> dict[str, Tensor]:
        fake = dim_zero_cat(self.fake)
        real = self.real.to(fake.device)
        precision = inside(fake, real, self.real_radii.to(fake.device)).mean()
        recall = inside(real, fake, knn_radii(fake, self.k)).mean()
        return {"precision": precision, "recall": recall}

    def check(self, num_samples: int, num_reference: int) -> None:
        if min(num_samples, num_reference) <= self.k:
            raise GanforgeError(
                f"precision/recall needs more than metrics.precision_recall_k={self.k} generated and "
                "reference samples; raise metrics.num_samples, or set metrics.precision_recall=false"
            )


def knn_radii(x: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Distance from each row of `x` to its k-th nearest other row."""
    return torch.cat([torch.cdist(part, x).kthvalue(k + 1, dim=1).values for part in x.split(chunk)])


def inside(x: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """1.0 where a row of `x` lies within some centre's radius, else 0.0."""
    return torch.cat([(torch.cdist(part, centres) <= radii).any(dim=1).float() for part in x.split(chunk)])


class MiFID(nn.Module):
    """FID times a penalty when generated samples lie closer (in cosine distance) to training
    images than the data itself does (Bai et al. 2021): a generator that memorised a scarce
    training set gets a worse score, not a better one. Compare runs on the same reference split."""

    def __init__(self, num_features: int, **_: Any) -> None:
        super().__init__()
        self.metric = MemorizationInformedFrechetInceptionDistance(
            feature=PassThrough(num_features), reset_real_features=False
        )

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        self.metric.real_features = [f.double() for f in shard(features, rank, world_size)]

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.metric.update(features, real=False)

    def compute(self) -> dict[str, Tensor]:
        return {"mifid": self.metric.compute()}

    def reset(self) -> None:
        self.metric.reset()

    def check(self, num_samples: int, num_reference: int) -> None:
        check_fid_counts(num_samples, num_reference)


class ClassCoverage(Metric):
    """Mode coverage by a classifier: classes covered, and KL(generated || real) of predicted classes.

    A class counts as covered when its share of generated samples is at least `min_share` of its
    share among real samples (stray misclassified samples do not make a collapsed class "covered").
    """

    full_state_update = False

    def __init__(self, num_classes: int, coverage_min_share: float = 0.1, **_: Any) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.min_share = coverage_min_share
        self.add_state("fake_counts", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.real_counts = torch.zeros(num_classes, dtype=torch.float64)

    def counts(self, logits: Tensor) -> Tensor:
        return torch.bincount(logits.argmax(1), minlength=self.num_classes).to(torch.float64)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        self.real_counts = self.counts(logits)  # not a state: every rank has all of it

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        self.fake_counts += self.counts(logits)

    def compute(self) -> dict[str, Tensor]:
        p_fake = self.fake_counts / self.fake_counts.sum()
        p_real = (self.real_counts / self.real_counts.sum()).to(p_fake.device)
        present = p_real > 0
        covered = (p_fake[present] >= self.min_share * p_real[present]).sum()
        nonzero = p_fake > 0
        # KL(fake || real); a generated class the real data never shows makes it infinite, as it should
        kl = (p_fake[nonzero] * (p_fake[nonzero] / p_real[nonzero]).log()).sum()
        return {"classes_covered": covered.to(torch.float64), "class_kl": kl}

    def check(self, num_samples: int, num_reference: int) -> None:
        pass


class ClassDiversity(Metric):
    """Within-class variety: per class (as the classifier predicts it), the mean squared distance of
    generated features from their class mean, over the same for real features, averaged over the
    classes with at least 2 of each. A ratio of spreads, not a share, so 1 is the target from both
    sides: near 0 is one image per class (a collapse that class coverage and class accuracy cannot
    see); above 1, a class's samples scatter more widely than its real images (noisy or malformed
    samples, other shapes the classifier still puts in that class), as early in training."""

    full_state_update = False

    def __init__(self, num_classes: int, num_features: int, **_: Any) -> None:
        super().__init__()
        self.add_state("fake_sum", torch.zeros(num_classes, num_features, dtype=torch.float64), "sum")
        self.add_state("fake_sq", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("fake_n", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.real_spread = torch.zeros(num_classes, dtype=torch.float64)
        self.real_n = torch.zeros(num_classes, dtype=torch.float64)

    @staticmethod
    def sums(features: Tensor, logits: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
        classes, f = logits.argmax(1), features.double()
        total = f.new_zeros(num_classes, f.shape[1]).index_add_(0, classes, f)
        sq = f.new_zeros(num_classes).index_add_(0, classes, f.pow(2).sum(1))
        return total, sq, f.new_zeros(num_classes).index_add_(0, classes, torch.ones_like(f[:, 0]))

    @staticmethod
    def spread(total: Tensor, sq: Tensor, n: Tensor) -> Tensor:
        n = n.clamp(min=1)
        return sq / n - (total / n[:, None]).pow(2).sum(1)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        total, sq, self.real_n = self.sums(features, logits, len(self.real_n))
        self.real_spread = self.spread(total, sq, self.real_n)

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        total, sq, n = self.sums(features, logits, len(self.real_n))
        self.fake_sum += total
        self.fake_sq += sq
        self.fake_n += n

    def compute(self) -> dict[str, Tensor]:
        real_spread, real_n = self.real_spread.to(self.fake_n.device), self.real_n.to(self.fake_n.device)
        both = (self.fake_n >= 2) & (real_n >= 2) & (real_spread > 0)
        if not both.any():
            return {"class_diversity": torch.tensor(0.0, dtype=torch.float64)}
        fake_spread = self.spread(self.fake_sum, self.fake_sq, self.fake_n)
        return {"class_diversity": (fake_spread[both].clamp(min=0) / real_spread[both]).mean()}

    def check(self, num_samples: int, num_reference: int) -> None:
        pass


class ClassAccuracy(nn.Module):
    """Conditional models: how often the classifier sees the requested class."""

    def __init__(self, num_classes: int, **_: Any) -> None:
        super().__init__()
        self.metric = MulticlassAccuracy(num_classes, average="micro")

    def set_reference(self, features: Tensor, logits: Tensor, rank: int, world_size: int) -> None:
        pass

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None) -> None:
        if labels is not None:
            self.metric.update(logits, labels)

    def compute(self) -> dict[str, Tensor]:
        return {"class_accuracy": self.metric.compute()} if self.metric.update_count else {}

    def reset(self) -> None:
        self.metric.reset()

    def check(self, num_samples: int, num_reference: int) -> None:
        pass


# name: (when it is on, given the metrics settings and whether the features are a classifier's; class)
FEATURE_METRICS: dict[str, tuple[Callable[[Mapping[str, Any], bool], bool], type]] = {
    "fid": (lambda s, classifier: True, FID),
    "kid": (lambda s, classifier: s["kid"], KID),
    "is": (lambda s, classifier: s["inception_score"], IS),
    "precision_recall": (lambda s, classifier: s["precision_recall"], PrecisionRecall),
    "mifid": (lambda s, classifier: s["mifid"], MiFID),
    "coverage": (lambda s, classifier: classifier, ClassCoverage),
    "diversity": (lambda s, classifier: classifier, ClassDiversity),
    "class_accuracy": (lambda s, classifier: classifier, ClassAccuracy),
}


class SampleQuality(nn.Module):
    """The metrics that are on, fed from one feature extraction."""

    def __init__(self, metrics: Mapping[str, FeatureMetric]) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict(metrics)  # type: ignore[arg-type]

    @classmethod
    def build(
        cls, settings: Mapping[str, Any], num_features: int, num_classes: int, classifier: bool
    ) -> SampleQuality:
        options = {"num_features": num_features, "num_classes": num_classes, **settings}
        return cls(
            {
                name: metric(**options)
                for name, (wanted, metric) in FEATURE_METRICS.items()
                if wanted(settings, classifier)
            }
        )

    def check_counts(self, num_samples: int, num_reference: int) -> None:
        for metric in self.metrics.values():
            metric.check(num_samples, num_reference)

    def set_reference(self, features: Tensor, logits: Tensor, rank: int = 0, world_size: int = 1) -> None:
        for metric in self.metrics.values():
            metric.set_reference(features, logits, rank, world_size)

    def update(self, features: Tensor, logits: Tensor, labels: Tensor | None = None) -> None:
        for metric in self.metrics.values():
            metric.update(features, logits, labels)

    def compute(self) -> dict[str, float]:
        """All metrics; a collective under DDP (every rank must call it)."""
        results: dict[str, float] = {}
        for metric in self.metrics.values():
            results.update({k: float(v) for k, v in metric.compute().items()})
        return results

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()
