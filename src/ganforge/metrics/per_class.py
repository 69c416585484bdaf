"""A conditional GAN's quality class by class, measured on its export: does it draw the rare classes
as well as the plentiful ones? Beside a downstream table it tells whether a bad GAN or a bad strategy
is to blame.

The judge is the metrics classifier (`metrics.features.classifier_features`, trained on the whole
training split): per class, how often it sees the requested class in that class's samples (class
accuracy), and the FID between those samples and the real held-out images of the class, in its
feature space. `rare` pools the rarer half of the classes (`class_balance.rare_classes`), `head` the
others. With a discriminator-rejection-sampling mask, the kept samples are measured too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from ganforge.class_balance import class_counts, rare_classes
from ganforge.datamodules.base import to_signed_unit
from ganforge.metrics.features import FeatureNetwork
from ganforge.metrics.sample_quality import PassThrough

Images = tuple[Tensor, Tensor]  # uint8 images [N, C, H, W], labels [N]
Row = dict[str, Any]


@torch.no_grad()
def judged(network: FeatureNetwork, images: Tensor, device: torch.device, batch_size: int = 500) -> Images:
    """(features, predicted class) of uint8 images, on the CPU."""
    features, predicted = [], []
    for batch in images.split(batch_size):
        f, logits = network(to_signed_unit(batch.to(device)))
        features.append(f.double().cpu())
        predicted.append(logits.argmax(1).cpu())
    return torch.cat(features), torch.cat(predicted)


def frechet_distance(generated: Tensor, real: Tensor) -> float:
    metric = FrechetInceptionDistance(feature=PassThrough(generated.shape[1]))
    metric.update(real, real=True)
    metric.update(generated, real=False)
    return float(metric.compute())


def quality(
    judgement: Images, labels: Tensor, real_features: Tensor, real_labels: Tensor, classes: list[int]
) -> Row:
    """Class accuracy and FID of the samples of `classes`, pooled, against the real images of them."""
    features, predicted = judgement
    mine = torch.isin(labels, torch.tensor(classes))
    theirs = torch.isin(real_labels, torch.tensor(classes))
    fid = frechet_distance(features[mine], real_features[theirs]) if mine.sum() > 1 else float("nan")
    accuracy = (predicted[mine] == labels[mine]).double().mean().item() if mine.any() else float("nan")
    return {"class accuracy": accuracy, "fid": fid, "samples": int(mine.sum())}


def per_class_quality(
    network: FeatureNetwork,
    synthetic: Images,
    held_out: Images,
    train_labels: Tensor,
    num_classes: int,
    device: torch.device,
    kept: Tensor | None = None,
) -> tuple[list[Row], Row]:
    """A row per class (its real training count, class accuracy, FID; also after DRS when `kept` is
    given) and a summary: the same pooled over the rare and the head classes."""
    labels = synthetic[1]
    judgement = judged(network, synthetic[0], device)
    real_features, _ = judged(network, held_out[0], device)
    counts = class_counts(train_labels, num_classes)
    masks = {"": torch.ones(len(labels), dtype=torch.bool)}
    if kept is not None:
        masks[" after DRS"] = kept

    def measured(classes: list[int]) -> Row:
        row: Row = {}
        for suffix, mask in masks.items():
            part = (judgement[0][mask], judgement[1][mask])
            values = quality(part, labels[mask], real_features, held_out[1], classes)
            row |= {f"{key}{suffix}": value for key, value in values.items()}
        return row

    rows = [{"class": c, "real training images": int(counts[c])} | measured([c]) for c in range(num_classes)]
    rare = rare_classes(counts)
    summary: Row = {}
    if rare:
        head = [c for c in range(num_classes) if c not in rare]
        for name, classes in (("rare", rare), ("head", head)):
            summary |= {
                f"{name} {key}": value for key, value in measured(classes).items() if "samples" not in key
            }
    return rows, summary
