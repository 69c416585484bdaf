"""FID (and optionally KID, IS) through torchmetrics, plus class coverage and within-class diversity
(and, for conditional models, class accuracy), on precomputed features.

Features are extracted once per image by a `FeatureNetwork` and handed to torchmetrics through a
pass-through "feature extractor", so one network pass serves every metric and the real-data
statistics are plain metric states that can be cached.

Distributed use: every rank updates with its own generated samples and every rank calls
`compute()` (torchmetrics sums/gathers the states). The cached real statistics must count once: the
FID sums and class counts live on rank 0 (zeros elsewhere) and KID's real features are sharded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ganforge.errors import GanforgeError


class PassThrough(nn.Module):
    """Lets torchmetrics consume features we already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class ClassCoverage(Metric):
    """Mode coverage by a classifier: classes covered, and KL(generated || real) of predicted classes.

    A class counts as covered when its share of generated samples is at least `min_share` of its
    share among real samples (stray misclassified samples do not make a collapsed class "covered").
    """

    full_state_update = False

    def __init__(self, num_classes: int, min_share: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.min_share = min_share
        self.add_state("fake_counts", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("real_counts", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, real: bool) -> None:
        counts = torch.bincount(logits.argmax(1), minlength=self.num_classes).to(torch.float64)
        if real:
            self.real_counts += counts
        else:
            self.fake_counts += counts

    def compute(self) -> dict[str, Tensor]:
        p_fake = self.fake_counts / self.fake_counts.sum()
        p_real = self.real_counts / self.real_counts.sum()
        present = p_real > 0
        covered = (p_fake[present] >= self.min_share * p_real[present]).sum()
        nonzero = p_fake > 0
        # KL(fake || real); a generated class the real data never shows makes it infinite, as it should
        kl = (p_fake[nonzero] * (p_fake[nonzero] / p_real[nonzero]).log()).sum()
        return {"classes_covered": covered.to(torch.float64), "class_kl": kl}

    def reset(self) -> None:
        real = self.real_counts.clone()
        super().reset()
        self.real_counts = real


class ClassDiversity(Metric):
    """Within-class variety: per class (as the classifier predicts it), the mean squared distance of
    generated features from their class mean, over the same for real features, averaged over the
    classes with at least 2 of each. 1: as varied as the data; near 0: one image per class — a collapse
    that class coverage and class accuracy cannot see."""

    full_state_update = False

    def __init__(self, num_classes: int, num_features: int) -> None:
        super().__init__()
        for side in ("fake", "real"):
            self.add_state(f"{side}_sum", torch.zeros(num_classes, num_features, dtype=torch.float64), "sum")
            self.add_state(f"{side}_sq", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor, logits: Tensor, real: bool) -> None:
        side, classes, f = "real" if real else "fake", logits.argmax(1), features.double()
        getattr(self, f"{side}_sum").index_add_(0, classes, f)
        getattr(self, f"{side}_sq").index_add_(0, classes, f.pow(2).sum(1))
        getattr(self, f"{side}_n").index_add_(0, classes, torch.ones_like(f[:, 0]))

    def spread(self, side: str) -> Tensor:
        n = getattr(self, f"{side}_n").clamp(min=1)
        mean = getattr(self, f"{side}_sum") / n[:, None]
        return getattr(self, f"{side}_sq") / n - mean.pow(2).sum(1)

    def compute(self) -> Tensor:
        both = (self.fake_n >= 2) & (self.real_n >= 2) & (self.spread("real") > 0)
        if not both.any():
            return torch.tensor(0.0, dtype=torch.float64)
        return (self.spread("fake")[both].clamp(min=0) / self.spread("real")[both]).mean()

    def reset(self) -> None:
        real = {k: getattr(self, f"real_{k}").clone() for k in ("sum", "sq", "n")}
        super().reset()
        for k, v in real.items():
            setattr(self, f"real_{k}", v)


class SampleQuality(nn.Module):
    def __init__(
        self,
        num_features: int,
        num_classes: int,
        kid: bool = False,
        inception_score: bool = False,
        coverage: bool = True,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        coverage_min_share: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.kid_subset_size = kid_subset_size
        self.is_splits = is_splits
        self.seed = seed
        self.fid = FrechetInceptionDistance(feature=PassThrough(num_features), reset_real_features=False)
        self.kid = (
            KernelInceptionDistance(
                feature=PassThrough(num_features), subset_size=kid_subset_size, reset_real_features=False
            )
            if kid
            else None
        )
        self.inception_score = (
            InceptionScore(feature=PassThrough(num_classes), splits=is_splits) if inception_score else None
        )
        self.coverage = ClassCoverage(num_classes, coverage_min_share) if coverage else None
        self.diversity = ClassDiversity(num_classes, num_features) if coverage else None
        # conditional models: how often the classifier sees the requested class
        self.class_accuracy = MulticlassAccuracy(num_classes, average="micro")

    def check_counts(self, num_samples: int, num_reference: int) -> None:
        """Refuse sample counts the metrics cannot work with (instead of NaN or a late crash)."""
        if num_samples < 2 or num_reference < 2:
            raise GanforgeError(
                f"FID needs at least 2 generated and 2 reference samples, got "
                f"metrics.num_samples={num_samples} and {num_reference} reference samples; "
                "raise metrics.num_samples / metrics.num_reference"
            )
        if self.kid is not None and min(num_samples, num_reference) < self.kid_subset_size:
            raise GanforgeError(
                f"KID draws subsets of metrics.kid_subset_size={self.kid_subset_size} samples, more than the "
                f"{min(num_samples, num_reference)} available; lower it or raise metrics.num_samples"
            )
        if self.inception_score is not None and num_samples < 2 * self.is_splits:
            raise GanforgeError(
                f"IS splits {num_samples} samples into metrics.is_splits={self.is_splits} groups; "
                f"use at least {2 * self.is_splits} samples or fewer splits"
            )

    def update(self, features: Tensor, logits: Tensor, real: bool, labels: Tensor | None = None) -> None:
        """`labels`: the classes a conditional generator was asked for (generated samples only)."""
        self.fid.update(features, real=real)
        if self.kid is not None:
            self.kid.update(features, real=real)
        if self.inception_score is not None and not real:
            self.inception_score.update(logits)
        if self.coverage is not None:
            self.coverage.update(logits, real=real)
            self.diversity.update(features, logits, real=real)
            if labels is not None and not real:
                self.class_accuracy.update(logits, labels)

    def compute(self) -> dict[str, float]:
        """All metrics; a collective under DDP (every rank must call it)."""
        results = {"fid": self.fid.compute()}
        with torch.random.fork_rng(devices=[]):  # KID/IS subsets: reproducible, and training's RNG untouched
            torch.manual_seed(self.seed)
            if self.kid is not None:
                results["kid"], results["kid_std"] = self.kid.compute()
            if self.inception_score is not None:
                results["is"], results["is_std"] = self.inception_score.compute()
        if self.coverage is not None:
            results.update(self.coverage.compute())
            results["class_diversity"] = self.diversity.compute()
        if self.class_accuracy.update_count:
            results["class_accuracy"] = self.class_accuracy.compute()
        values = {k: float(v) for k, v in results.items()}
        if not math.isfinite(values["fid"]):
            raise FloatingPointError("FID is not finite: generated samples contain NaN/inf")
        return values

    def reset(self) -> None:
        """Forget generated samples; real statistics stay."""
        metrics = (
            self.fid,
            self.kid,
            self.inception_score,
            self.coverage,
            self.diversity,
            self.class_accuracy,
        )
        for metric in metrics:
            if metric is not None:
                metric.reset()

    @property
    def reference_keys(self) -> set[str]:
        """The keys of `reference_state()`: what a cached copy of it must hold."""
        keys = {"fid"} | ({"kid_features"} if self.kid is not None else set())
        return keys | ({"class_counts", "class_spread"} if self.coverage is not None else set())

    def reference_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "fid": {
                "sum": self.fid.real_features_sum.cpu(),
                "cov_sum": self.fid.real_features_cov_sum.cpu(),
                "n": self.fid.real_features_num_samples.cpu(),
            }
        }
        if self.kid is not None:
            state["kid_features"] = torch.cat(self.kid.real_features).cpu()
        if self.coverage is not None:
            state["class_counts"] = self.coverage.real_counts.cpu()
            state["class_spread"] = {
                k: getattr(self.diversity, f"real_{k}").cpu() for k in ("sum", "sq", "n")
            }
        return state

    def load_reference_state(self, state: dict[str, Any], rank: int = 0, world_size: int = 1) -> None:
        """Install cached real statistics so that, summed over ranks, they count exactly once."""
        device = self.fid.real_features_sum.device
        owner = rank == 0
        fid = state["fid"]
        self.fid.real_features_sum = fid["sum"].to(device) * owner
        self.fid.real_features_cov_sum = fid["cov_sum"].to(device) * owner
        self.fid.real_features_num_samples = fid["n"].to(device) * owner
        if self.kid is not None:
            if "kid_features" not in state:
                raise GanforgeError("cached reference statistics have no KID features; delete the cache file")
            self.kid.real_features = [state["kid_features"][rank::world_size].to(device)]
        if self.coverage is not None:
            self.coverage.real_counts = state["class_counts"].to(device) * owner
            for k, v in state["class_spread"].items():
                setattr(self.diversity, f"real_{k}", v.to(device) * owner)
