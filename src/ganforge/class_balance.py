"""The real-only answers to class imbalance, which synthetic data has to beat (`augment.py`):

- **re-weighting** by the effective number of samples (Cui et al. 2019): class c's loss weight is
  (1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes, so that beta = 0 is plain
  cross-entropy and beta -> 1 inverse class frequency;
- **re-sampling**: each image drawn with probability proportional to 1 / n_(its class), so every class
  is equally frequent in the batches;
- **logit adjustment** (Menon et al. 2021): training on the logits plus tau * log(prior_c), predicting
  with the plain logits, which pushes the decision boundary away from the rare classes.

And the measures that show what imbalance costs: per-class recall on the (balanced) test set,
balanced accuracy (their mean) and the recall of the rare classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Balancing:
    """How a classifier's training counters imbalance: cross-entropy class weights, offsets added to
    the logits while training, per-image sampling weights (None: not used)."""

    class_weights: Tensor | None = None
    logit_offsets: Tensor | None = None
    sample_weights: Tensor | None = None


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels, minlength=num_classes)


def effective_number_weights(counts: Tensor, beta: float) -> Tensor:
    """Per-class loss weights (1 - beta) / (1 - beta^n_c), summing to the number of classes; a class
    without images gets weight 0."""
    counts = counts.double()
    weights = torch.where(counts > 0, (1 - beta) / (1 - beta**counts), torch.zeros_like(counts))
    return (weights * len(counts) / weights.sum()).float()


def resampling_weights(labels: Tensor, num_classes: int) -> Tensor:
    """Per-image sampling weights 1 / n_(its class): every class equally likely per draw."""
    return 1.0 / class_counts(labels, num_classes).double()[labels]


def logit_adjustments(counts: Tensor, tau: float) -> Tensor:
    """tau * log(prior_c), added to the logits while training (Menon et al. 2021, eq. 10)."""
    prior = counts.double() / counts.sum()
    return (tau * prior.log()).float()


def rare_classes(counts: Tensor) -> list[int]:
    """The half of the classes with the fewest training images (ties to the higher index), or none
    when every class has as many: the classes whose recall a long tail puts at risk."""
    if counts.min() == counts.max():
        return []
    order = sorted(range(len(counts)), key=lambda c: (int(counts[c]), -c))
    return sorted(order[: len(counts) // 2])


def per_class_recall(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Recall of each class (NaN for a class absent from `labels`)."""
    hits = torch.bincount(labels[predictions == labels], minlength=num_classes).double()
    return hits / class_counts(labels, num_classes).double()
