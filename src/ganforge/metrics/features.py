"""Feature networks for FID/KID/IS. Each maps images in [-1, 1] to (features, class logits).

`classifier`: penultimate features of a SmallCNN trained on the data set's real training images
(offline; cached per data set; the whole training split, also when the GAN trains on a cut of it).
`inception`: the standard FID Inception-v3 of torch-fidelity, fed the way published numbers are
computed (uint8 RGB, legacy TF1 bilinear resize to 299, no antialiasing).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganforge.atomic import atomic_save
from ganforge.cache import cache_key, fingerprint, load_entry, locked
from ganforge.datamodules.base import ImageDataModule, to_uint8
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import SmallCNN, accuracy, fit_classifier

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


def inception_weights_path() -> Path:
    """Where torch.hub (and so torchmetrics/torch-fidelity) looks: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def to_uint8_rgb(images: Tensor) -> Tensor:
    """[-1, 1] float -> uint8 [0, 255] with 3 channels (grayscale repeated), as Inception expects."""
    images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FeatureNetwork(nn.Module):
    """`name`, `num_features`, `num_classes` and an `id` that changes whenever the features would."""

    name: str
    num_features: int
    num_classes: int
    id: str

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> FeatureNetwork:
        return super().train(False)  # a fixed measuring instrument: never in training mode


class ClassifierFeatures(FeatureNetwork):
    name = "classifier"

    def __init__(self, model: SmallCNN, test_accuracy: float, id: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.num_features = model.feature_dim
        self.num_classes = model.num_classes
        self.test_accuracy = test_accuracy
        self.id = id
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.features(images)
        return features, self.model.head(features)


class InceptionFeatures(FeatureNetwork):
    name = "inception"
    num_features = 2048
    num_classes = 1008

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = ensure_inception_weights()
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048"],
            feature_extractor_weights_path=str(path),
            antialias=False,  # legacy resize: comparable to published FIDs
        )
        self.id = f"inception-v3-compat:{INCEPTION_FILE}:legacy-resize"
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.net(to_uint8_rgb(images))
        # torch-fidelity's "logits_unbiased" (what IS uses): the classifier layer without its bias
        return features, features @ self.net.fc.weight.T.to(features.dtype)


def ensure_inception_weights() -> Path:
    """The weight file, downloaded when missing and online; otherwise one error that says what to do."""
    path = inception_weights_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), progress=False)
    except Exception as err:
        raise GanforgeError(
            f"metrics=inception needs the FID Inception weights {INCEPTION_FILE} in {path.parent} "
            f"($TORCH_HOME/hub/checkpoints/) and could not download them ({type(err).__name__}); put the "
            f"file there (from {INCEPTION_URL}), or use metrics=classifier (offline)"
        ) from err
    return path


def training_images(datamodule: ImageDataModule, split: str) -> Any:
    """What the metrics classifier learns from: `full`, the data set's whole training split, also when
    data.train_fraction / train_per_class / long_tail cut what the GAN sees (one judge for every cut,
    and one that knows the rare classes as well as the others); `subset`, only the GAN's images."""
    if split not in ("full", "subset"):
        raise GanforgeError(f"metrics.classifier.train_split must be full or subset, got {split!r}")
    full = datamodule.full_train if datamodule.full_train is not None else datamodule.data_train
    return full if split == "full" else datamodule.data_train


def classifier_features(
    datamodule: ImageDataModule, settings: dict[str, Any], cache_dir: str, device: torch.device
) -> ClassifierFeatures:
    """The data set's classifier: loaded from the cache, or trained on its real training images and cached."""
    if not datamodule.num_classes or datamodule.num_classes < 2:
        raise GanforgeError(
            f"metrics=classifier needs a labelled data set, and {datamodule.name} has no classes; use "
            "metrics=inception (the standard FID network) or metrics=none"
        )
    splits = {"test": datamodule.data_test, "val": datamodule.data_val}  # its accuracy on either
    split = next((name for name, data in splits.items() if data), None)
    if split is None:
        raise GanforgeError(
            f"metrics=classifier measures its classifier on held-out images and {datamodule.name} has no "
            "test or val split; hold some out (e.g. data.val_fraction=0.1), or use metrics=inception or none"
        )
    held_out = splits[split]
    train = training_images(datamodule, settings["train_split"])
    settings = {k: v for k, v in settings.items() if k != "train_split"}  # the fingerprint says it
    key = {
        "train": fingerprint(train),
        "test": fingerprint(held_out),
        "channels": datamodule.channels,
        "num_classes": datamodule.num_classes,
        "architecture": "SmallCNN-v1",
        **settings,
    }
    path = (
        Path(cache_dir) / "classifiers" / f"{datamodule.name}_{datamodule.image_size}px_{cache_key(key)}.pt"
    )
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, not from the caller's RNG state
        torch.manual_seed(settings["seed"])
        model = SmallCNN(
            datamodule.channels, datamodule.num_classes, settings["width"], settings["feature_dim"]
        )
    with locked(path):
        shapes = {k: v.shape for k, v in model.state_dict().items()}

        def fits(value: Any) -> bool:
            return (
                isinstance(value, dict)
                and "test_accuracy" in value
                and {k: v.shape for k, v in value.get("state_dict", {}).items()} == shapes
            )

        stored = load_entry(path, fits)
        if stored is not None:
            model.load_state_dict(stored["state_dict"])
            log.info("classifier features: %s (test accuracy %.4f, cached)", path, stored["test_accuracy"])
            return ClassifierFeatures(model.to(device), stored["test_accuracy"], f"classifier:{path.stem}")
        log.info(
            "training the %s classifier for feature FID and mode coverage: once per data set and size, "
            "then read from %s",
            datamodule.name,
            path,
        )
        training = {k: settings[k] for k in ("epochs", "max_steps", "lr", "batch_size", "seed")}
        fit_classifier(model, train, device, **training, progress="metrics classifier")
        test_accuracy = accuracy(model, held_out, device)
        log.info("classifier %s accuracy %.4f -> %s", split, test_accuracy, path)
        atomic_save({"state_dict": model.state_dict(), "test_accuracy": test_accuracy, "key": key}, path)
        return ClassifierFeatures(model, test_accuracy, f"classifier:{path.stem}")
