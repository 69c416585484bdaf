"""One evaluation protocol: feature network + reference statistics (cached) + generated-sample metrics.

Used by the training callback and by `eval.py`, so both report numbers under the same protocol,
which `protocol` states: feature network, sample counts, reference split, resize mode.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ganforge.atomic import atomic_save
from ganforge.cache import cache_key, load_entry, locked
from ganforge.datamodules.base import ImageDataModule, fingerprint, to_signed_unit
from ganforge.errors import GanforgeError
from ganforge.metrics.features import (
    FeatureNetwork,
    InceptionFeatures,
    classifier_features,
    inception_weights_path,
)
from ganforge.metrics.mixture import MixtureEvaluator, generated
from ganforge.metrics.sample_quality import SampleQuality

log = logging.getLogger(__name__)

FEATURE_NETWORKS = ("auto", "classifier", "inception", "none")


def choose_feature_network(name: str, datamodule: ImageDataModule) -> str:
    """Resolve `auto`: classifier for labelled data, else Inception if its weights are here, else none."""
    if name not in FEATURE_NETWORKS:
        raise GanforgeError(
            f"metrics.feature_network={name!r} is unknown; use one of {', '.join(FEATURE_NETWORKS)}"
        )
    if name != "auto":
        return name
    if datamodule.num_classes and datamodule.num_classes >= 2:
        return "classifier"
    if inception_weights_path().is_file():
        return "inception"
    log.warning(
        "metrics=auto: %s has no labels for the classifier and the Inception weights are not in %s, so no "
        "sample-quality metrics; put the file there for metrics=inception, or pass metrics=none",
        datamodule.name,
        inception_weights_path().parent,
    )
    return "none"


def local_count(total: int, rank: int, world_size: int) -> int:
    """This rank's share of `total` generated samples (the shares add up to `total`)."""
    return total // world_size + (rank < total % world_size)


class Evaluator:
    primary = "fid"  # the metric whose best value is tracked (val/fid_best) and checkpointed

    def __init__(self, network: FeatureNetwork, quality: SampleQuality, protocol: dict[str, Any]) -> None:
        self.network = network
        self.quality = quality
        self.protocol = protocol

    @classmethod
    def build(
        cls,
        settings: Mapping[str, Any],
        datamodule: ImageDataModule,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> Evaluator | MixtureEvaluator | None:
        """None when metrics are off. Trains/computes and caches what is missing (call on rank 0 first).
        Point data (the 2-D mixtures) gets the mode-collapse metrics instead of feature metrics."""
        if settings["feature_network"] != "none" and getattr(datamodule, "modes", None) is not None:
            return MixtureEvaluator.build(settings, datamodule)
        name = choose_feature_network(settings["feature_network"], datamodule)
        if name == "none":
            return None
        if name == "classifier":
            network: FeatureNetwork = classifier_features(
                datamodule, dict(settings["classifier"]), settings["cache_dir"], device
            )
        else:
            network = InceptionFeatures().to(device)
        quality = SampleQuality(
            network.num_features,
            network.num_classes,
            kid=settings["kid"],
            inception_score=settings["inception_score"],
            coverage=name == "classifier",
            kid_subset_size=settings["kid_subset_size"],
            is_splits=settings["is_splits"],
            coverage_min_share=settings["coverage_min_share"],
            seed=settings["seed"],
        ).to(device)
        state, n_ref = reference_statistics(quality, network, datamodule, settings, device)
        quality.check_counts(settings["num_samples"], n_ref)
        quality.load_reference_state(state, rank, world_size)
        protocol = {
            "feature network": network.name,
            "features": f"{network.num_features}-d "
            + (
                "penultimate layer of the data set's SmallCNN"
                if name == "classifier"
                else "Inception-v3 pool3"
            ),
            "generated samples": settings["num_samples"],
            "reference samples": n_ref,
            "reference split": f"{datamodule.name} {settings['reference_split']}",
            "resize": (
                f"none ({datamodule.image_size}x{datamodule.image_size}, as trained)"
                if name == "classifier"
                else "legacy TF1 bilinear to 299x299 on uint8 RGB (torch-fidelity, as published FIDs)"
            ),
        }
        if name == "classifier":
            protocol["classifier test accuracy"] = round(network.test_accuracy, 4)
        return cls(network, quality, protocol)

    @torch.no_grad()
    def evaluate(
        self,
        generate: Callable[..., Tensor],
        latent_dim: int,
        num_samples: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        num_classes: int | None = None,
    ) -> dict[str, float]:
        """Generate `num_samples` on this rank from seeded noise and return every metric (a collective).
        Conditional models (`num_classes`) generate balanced classes; with classifier features the
        share the classifier assigns to the requested class is `class_accuracy`."""
        self.quality.reset()
        batches = generated(generate, latent_dim, num_samples, batch_size, seed, device, num_classes)
        for samples, labels in batches:
            features, logits = self.network(samples)
            self.quality.update(features, logits, real=False, labels=labels)
        return self.quality.compute()


@torch.no_grad()
def reference_statistics(
    quality: SampleQuality,
    network: FeatureNetwork,
    datamodule: ImageDataModule,
    settings: Mapping[str, Any],
    device: torch.device,
) -> tuple[dict[str, Any], int]:
    """Real-data statistics of the reference split under this feature network, cached on disk."""
    split = settings["reference_split"]
    dataset = {"train": datamodule.data_train, "val": datamodule.data_val, "test": datamodule.data_test}.get(
        split
    )
    if split not in ("train", "val", "test"):
        raise GanforgeError(f"metrics.reference_split={split!r} is unknown; use train, val or test")
    if dataset is None or len(dataset) < 2:
        raise GanforgeError(
            f"metrics.reference_split={split}: {datamodule.name} has no such split; use train"
        )
    n = min(settings["num_reference"], len(dataset))
    indices = (
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(settings["seed"]))[:n]
        .sort()
        .values
    )
    key = {
        "data": fingerprint(dataset),
        "indices": hashlib.blake2b(indices.numpy().tobytes(), digest_size=8).hexdigest(),
        "network": network.id,
        "kid": quality.kid is not None,
        "coverage": quality.coverage is not None,
        "class_spread": quality.diversity is not None,  # within-class statistics (class_diversity)
    }
    name = f"{datamodule.name}_{split}_{datamodule.image_size}px_{network.name}_{n}_{cache_key(key)}.pt"
    path = Path(settings["cache_dir"]) / "reference" / name
    with locked(path):
        state = load_entry(path, lambda v: isinstance(v, dict) and set(v) == quality.reference_keys)
        if state is not None:
            log.info("reference statistics: %s (cached)", path)
            return state, n
        log.info("computing reference statistics of %d %s images -> %s", n, split, path)
        # a DataLoader draws its base seed from the global RNG even unshuffled: without its own
        # generator, a run's training would differ between first use of a data set and cached runs
        batches = DataLoader(
            Subset(dataset, indices.tolist()), batch_size=settings["batch_size"], generator=torch.Generator()
        )
        for images, _ in batches:
            features, logits = network(to_signed_unit(images.to(device)))
            quality.update(features, logits, real=True)
        state = quality.reference_state()
        atomic_save(state, path)
    return state, n
