"""Evaluation protocols: one interface (`SampleEvaluator`) and a registry of them by name.

The training callback and `eval.py` both build one with `build_evaluator`, so both report numbers
under the same protocol, which `protocol` states: feature network, metrics, sample counts, noise,
reference split, resize mode. A new protocol is a `SampleEvaluator` subclass and a function
registered with `@evaluator("name")`, chosen by `metrics.feature_network=name`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ganforge.datamodules.base import ImageDataModule
from ganforge.errors import GanforgeError
from ganforge.metrics.base import SampleEvaluator
from ganforge.metrics.feature_evaluator import FeatureEvaluator
from ganforge.metrics.features import (
    InceptionFeatures,
    classifier_features,
    inception_weights_path,
)
from ganforge.metrics.mixture import MixtureEvaluator

log = logging.getLogger(__name__)


def choose_feature_network(name: str, datamodule: ImageDataModule) -> str:
    """Resolve `auto`: classifier for labelled data, else Inception if its weights are here, else none."""
    known = ["auto", *(n for n in EVALUATORS if n != "mixture"), "none"]
    if name not in known:
        raise GanforgeError(f"metrics.feature_network={name!r} is unknown; use one of {', '.join(known)}")
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


Builder = Callable[[Mapping[str, Any], ImageDataModule, torch.device, int, int], SampleEvaluator]
EVALUATORS: dict[str, Builder] = {}


def evaluator(name: str) -> Callable[[Builder], Builder]:
    """Register an evaluation protocol under `name` (a `metrics.feature_network` value)."""

    def register(build: Builder) -> Builder:
        EVALUATORS[name] = build
        return build

    return register


def build_evaluator(
    settings: Mapping[str, Any],
    datamodule: ImageDataModule,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> SampleEvaluator | None:
    """None when metrics are off. Trains/computes and caches what is missing (call on rank 0 first).
    Point data (the 2-D mixtures) gets the mode-collapse metrics instead of feature metrics."""
    if settings["feature_network"] != "none" and getattr(datamodule, "modes", None) is not None:
        return EVALUATORS["mixture"](settings, datamodule, device, rank, world_size)
    name = choose_feature_network(settings["feature_network"], datamodule)
    return None if name == "none" else EVALUATORS[name](settings, datamodule, device, rank, world_size)


@evaluator("classifier")
def classifier_evaluator(
    settings: Mapping[str, Any], datamodule: ImageDataModule, device: torch.device, rank: int, world_size: int
) -> FeatureEvaluator:
    network = classifier_features(datamodule, dict(settings["classifier"]), settings["cache_dir"], device)
    protocol = {
        "features": f"{network.num_features}-d penultimate layer of the data set's SmallCNN",
        "resize": f"none ({datamodule.image_size}x{datamodule.image_size}, as trained)",
        "classifier held-out accuracy": round(network.test_accuracy, 4),
    }
    return FeatureEvaluator.build(settings, datamodule, network, device, rank, world_size, protocol)


@evaluator("inception")
def inception_evaluator(
    settings: Mapping[str, Any], datamodule: ImageDataModule, device: torch.device, rank: int, world_size: int
) -> FeatureEvaluator:
    protocol = {
        "features": "2048-d Inception-v3 pool3",
        "resize": "legacy TF1 bilinear to 299x299 on uint8 RGB (torch-fidelity, as published FIDs)",
    }
    network = InceptionFeatures().to(device)
    return FeatureEvaluator.build(settings, datamodule, network, device, rank, world_size, protocol)


@evaluator("mixture")
def mixture_evaluator(
    settings: Mapping[str, Any], datamodule: Any, device: torch.device, rank: int, world_size: int
) -> MixtureEvaluator:
    return MixtureEvaluator(settings, datamodule.modes, datamodule.std).to(device)
