"""A small CNN classifier trained on a data set's real training images.

Its penultimate features are the offline feature space for FID on MNIST-like data, its predictions
measure mode coverage, and the same architecture is the downstream classifier of `augment.py`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from ganforge.class_balance import Balancing
from ganforge.datamodules.base import to_signed_unit
from ganforge.progress import Progress

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = feature_dim

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *block(channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (the FID feature space) of images in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _batches(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int, sample_weights: Tensor | None = None
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    if sample_weights is None:
        return DataLoader(dataset, batch_size, shuffle=shuffle, generator=generator)
    sampler = WeightedRandomSampler(sample_weights, len(dataset), replacement=True, generator=generator)
    return DataLoader(dataset, batch_size, sampler=sampler)


@torch.no_grad()
def predictions(
    model: SmallCNN, dataset: Dataset, device: torch.device, batch_size: int = 512
) -> tuple[Tensor, Tensor]:
    """(predicted class, label) of every item, on the CPU."""
    model.eval()
    predicted, labels = [], []
    for images, y in _batches(dataset, batch_size, shuffle=False, seed=0):
        predicted.append(model(to_signed_unit(images.to(device))).argmax(1).cpu())
        labels.append(y)
    return torch.cat(predicted), torch.cat(labels)


@torch.no_grad()
def accuracy(model: SmallCNN, dataset: Dataset, device: torch.device, batch_size: int = 512) -> float:
    model.eval()
    correct = total = 0
    for images, labels in _batches(dataset, batch_size, shuffle=False, seed=0):
        pred = model(to_signed_unit(images.to(device))).argmax(1)
        correct += (pred == labels.to(device)).sum().item()
        total += labels.numel()
    return correct / max(total, 1)


def fit_classifier(
    model: SmallCNN,
    train: Dataset,
    device: torch.device,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    max_steps: int | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
    weighted: tuple[Dataset, float] | None = None,
    progress: str | None = None,
    balancing: Balancing | None = None,
) -> SmallCNN:
    """Adam + cross-entropy (cosine schedule) on uint8 (image, label) data; deterministic per seed.
    Trains `epochs` passes, or `max_steps` optimizer steps if that comes first (large data sets).
    `transform` augments each uint8 image on the device. `weighted` = (data set, lambda) adds, per step,
    lambda times the loss on a batch of that set, whose forward pass neither draws from the training
    RNG nor moves the batch-norm statistics: those stay the training set's (with lambda = 0 the model
    is exactly the one trained without it). `progress`: show progress with this description (a bar on a
    terminal, else log lines: a first training can take minutes before anything else is printed).
    `balancing`: class weights, logit offsets or sampling weights against class imbalance
    (`ganforge.class_balance`), applied to the training set's batches."""
    model.to(device).train()
    steps = epochs * -(-len(train) // batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    second = None
    if weighted is not None:
        extra, weight = weighted
        second = (_cycle(extra, batch_size, seed + 1_000_003), weight)
    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's RNG (e.g. GAN training) untouched
        torch.manual_seed(seed)
        with Progress(progress or "", steps, "steps", enabled=progress is not None) as bar:
            _fit(
                model, train, device, epochs, lr, batch_size, seed, steps, transform, second, bar.advance,
                balancing or Balancing(),
            )  # fmt: skip
    return model.eval()


def _cycle(dataset: Dataset, batch_size: int, seed: int) -> Iterator[list[Tensor]]:
    """Shuffled batches of `dataset`, epoch after epoch, from their own generator."""
    return itertools.chain.from_iterable(
        _batches(dataset, batch_size, shuffle=True, seed=seed + epoch) for epoch in itertools.count()
    )


@contextmanager
def frozen_batch_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Batch norm normalises with the batch's statistics but leaves its running ones (and its batch
    count) as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _loss(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    device: torch.device,
    transform: Callable | None,
    balancing: Balancing | None = None,
) -> tuple[Tensor, Tensor]:
    """The cross-entropy (class-weighted, on adjusted logits, as `balancing` says) and the number of
    correct predictions (of the plain logits)."""
    images, labels = images.to(device), labels.to(device)
    if getattr(transform, "batched", False):  # draws parameters per image itself (ganforge.augmentation)
        images = transform(images)
    elif transform is not None:  # per image: a batch-level call would draw one set of parameters for all
        images = torch.stack([transform(x) for x in images])
    logits = model(to_signed_unit(images))
    weights = offsets = None
    if balancing is not None:
        weights, offsets = balancing.class_weights, balancing.logit_offsets
    trained = logits if offsets is None else logits + offsets.to(device)
    loss = nn.functional.cross_entropy(
        trained, labels, weight=None if weights is None else weights.to(device)
    )
    return loss, (logits.argmax(1) == labels).sum()


def _fit(
    model: SmallCNN,
    train: Dataset,
    device: torch.device,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    steps: int,
    transform: Callable[[Tensor], Tensor] | None,
    second: tuple[Iterator[list[Tensor]], float] | None,
    advance: Callable[[int, str], None],
    balancing: Balancing,
) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    per_epoch = -(-len(train) // batch_size)
    step, planned = 0, -(-steps // per_epoch)  # the epochs `steps` reach into
    for epoch in range(epochs):
        total = seen = correct = 0.0
        batches = _batches(
            train, batch_size, shuffle=True, seed=seed + epoch, sample_weights=balancing.sample_weights
        )
        for images, labels in batches:
            loss, right = _loss(model, images, labels, device, transform, balancing)
            if second is not None:
                extra, weight = second
                devices = [device] if device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices), frozen_batch_norm_statistics(model):
                    loss = loss + weight * _loss(model, *next(extra), device, None)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen, step = total + loss.item() * labels.numel(), seen + labels.numel(), step + 1
            correct += right.item()
            advance(1, f"epoch {epoch + 1}/{planned}, train accuracy {correct / seen:.1%}")
            if step == steps:
                break
        log.debug("classifier epoch %d: %d steps, train loss %.4f", epoch + 1, step, total / seen)
        if step == steps:
            break
    log.info(
        "classifier trained: %d steps on %d images, last-epoch loss %.4f", step, len(train), total / seen
    )
