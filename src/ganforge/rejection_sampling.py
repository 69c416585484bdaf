"""Discriminator rejection sampling (DRS; Azadi et al. 2019): keep a generated sample with a
probability that grows with the discriminator's logit on it, so that the kept samples follow the data
more closely than the generator does.

A discriminator trained with the logistic loss has, at its optimum, logit D(x) = log p_data(x) / p_G(x).
Rejection sampling from p_G with acceptance p_data / (M p_G) gives p_data, with M = max p_data / p_G:
an acceptance of exp(D(x) - D*), D* the largest logit. In practice that accepts almost nothing, so DRS
shifts it in logit space: F(x) = D(x) - D* - log(1 - exp(D(x) - D* - eps)), accept with probability
sigmoid(F(x) - gamma), where gamma sets the overall acceptance. Here gamma is F's value at
`percentile` (a sample there is kept with probability 1/2), and D* is the largest logit of the set,
not a running maximum: the decision is the same whatever order the samples come in. A conditional
export is sampled class by class (each class has its own density ratio, its own D* and gamma), so
every class keeps about the same share.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)

EPSILON = 1e-6  # keeps log(1 - exp(.)) finite at the largest logit itself, as in the paper
LOGISTIC_LOSSES = ("ganforge.losses.NonSaturatingLoss",)  # D's logit estimates log p_data / p_G


def acceptance(logits: Tensor, percentile: float) -> Tensor:
    """Each sample's probability of being kept, from the discriminator's logits on one set."""
    if not 0 <= percentile <= 100:
        raise GanforgeError(f"drs_percentile is a percentile in [0, 100] (e.g. 50), got {percentile}")
    shifted = logits.double() - logits.double().max()
    f = shifted - torch.log1p(-torch.exp(shifted - EPSILON))
    gamma = torch.quantile(f, percentile / 100)
    return torch.sigmoid(f - gamma)


def rejection_sample(logits: Tensor, labels: Tensor, percentile: float, seed: int) -> Tensor:
    """A boolean mask of the samples DRS keeps: per class (label; -1 for unconditional samples), a
    seeded uniform draw u_i per sample, kept when u_i <= its acceptance probability."""
    if logits.shape != labels.shape:
        raise GanforgeError(f"{len(logits)} discriminator scores for {len(labels)} samples; export again")
    draws = torch.rand(len(logits), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    keep = torch.zeros(len(logits), dtype=torch.bool)
    for label in labels.unique():
        members = labels == label
        keep[members] = draws[members] <= acceptance(logits[members], percentile)
    return keep


def check_discriminator_loss(loss_target: str | None, folder: str) -> None:
    """Refuse DRS on an export whose discriminator was not trained with the logistic loss: a hinge or
    Wasserstein critic's output is no log density ratio, and the acceptance rule would mean nothing."""
    if loss_target is not None and loss_target not in LOGISTIC_LOSSES:
        raise GanforgeError(
            f"synthetic_dir={folder}: DRS reads the discriminator's logit as log p_data / p_G, which only "
            f"the logistic loss trains (this GAN's was {loss_target.rsplit('.', 1)[-1]}); export from a GAN "
            "trained with model/loss=non_saturating, or remove drs from synthetic_filters"
        )
