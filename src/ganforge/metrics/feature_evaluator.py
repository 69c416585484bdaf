"""The feature-network protocol: FID and the other `SampleQuality` metrics on one network's features
of generated images, against the cached features of a seeded subset of the real data."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ganforge.atomic import atomic_save
from ganforge.cache import cache_key, fingerprint, load_entry, locked
from ganforge.datamodules.base import ImageDataModule, to_signed_unit
from ganforge.errors import GanforgeError
from ganforge.metrics.base import SampleEvaluator
from ganforge.metrics.features import FeatureNetwork
from ganforge.metrics.sample_quality import SampleQuality

log = logging.getLogger(__name__)


class FeatureEvaluator(SampleEvaluator):
    """FID and the other feature metrics (`SampleQuality`) under one feature network."""

    primary = "fid"

    def __init__(
        self,
        settings: Mapping[str, Any],
        network: FeatureNetwork,
        quality: SampleQuality,
        protocol: dict[str, Any],
    ) -> None:
        super().__init__(settings, protocol)
        self.network = network
        self.quality = quality

    @classmethod
    def build(
        cls,
        settings: Mapping[str, Any],
        datamodule: ImageDataModule,
        network: FeatureNetwork,
        device: torch.device,
        rank: int,
        world_size: int,
        protocol: dict[str, Any],
    ) -> FeatureEvaluator:
        classifier = network.name == "classifier"
        quality = SampleQuality.build(settings, network.num_features, network.num_classes, classifier)
        features, logits = reference_features(network, datamodule, settings, device)
        quality.check_counts(settings["num_samples"], len(features))
        quality.to(device).set_reference(features.to(device), logits.to(device), rank, world_size)
        protocol = {
            "feature network": network.name,
            **protocol,
            "metrics": ", ".join(quality.metrics),
            "reference samples": len(features),
            "reference split": f"{datamodule.name} {settings['reference_split']}",
        }
        return cls(settings, network, quality, protocol)

    def reset(self) -> None:
        self.quality.reset()

    def update(self, samples: Tensor, labels: Tensor | None) -> None:
        features, logits = self.network(samples)
        self.quality.update(features, logits, labels)

    def compute(self) -> dict[str, float]:
        return self.quality.compute()


@torch.no_grad()
def reference_features(
    network: FeatureNetwork,
    datamodule: ImageDataModule,
    settings: Mapping[str, Any],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Features and class logits of the reference split's images (a seeded subset), cached on disk:
    every metric builds its real statistics from them."""
    split = settings["reference_split"]
    if split not in ("train", "val", "test"):
        raise GanforgeError(f"metrics.reference_split={split!r} is unknown; use train, val or test")
    splits = {"train": datamodule.data_train, "val": datamodule.data_val, "test": datamodule.data_test}
    dataset = splits[split]
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
    }
    name = f"{datamodule.name}_{split}_{datamodule.image_size}px_{network.name}_{n}_{cache_key(key)}.pt"
    path = Path(settings["cache_dir"]) / "reference" / name
    with locked(path):
        cached = load_entry(path, lambda v: isinstance(v, dict) and set(v) == {"features", "logits"})
        if cached is not None:
            log.info("reference features: %s (cached)", path)
            return cached["features"], cached["logits"]
        log.info("computing reference features of %d %s images -> %s", n, split, path)
        # a DataLoader draws its base seed from the global RNG even unshuffled: without its own
        # generator, a run's training would differ between first use of a data set and cached runs
        batches = DataLoader(
            Subset(dataset, indices.tolist()), batch_size=settings["batch_size"], generator=torch.Generator()
        )
        parts = [network(to_signed_unit(images.to(device))) for images, _ in batches]
        features = torch.cat([f for f, _ in parts]).cpu()
        logits = torch.cat([lg for _, lg in parts]).cpu()
        atomic_save({"features": features, "logits": logits}, path)
    return features, logits
