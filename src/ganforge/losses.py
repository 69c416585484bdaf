"""Adversarial objectives as swappable components.

Each loss turns raw discriminator outputs (logits / critic values) into the two
training objectives. `score` maps outputs to the number users read as D(x):
a probability for the BCE loss, the raw critic value for the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class GANLoss:
    """Interface: discriminator minimises `d_loss`, generator minimises `g_loss`."""

    name: str = "gan"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, out: Tensor) -> Tensor:
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. 2014 with the non-saturating generator objective -log D(G(z))."""

    name = "non_saturating"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return F.softplus(-fake).mean()

    def score(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)


class HingeLoss(GANLoss):
    """Hinge loss of Lim & Ye 2017 / Miyato et al. 2018 (SNGAN)."""

    name = "hinge"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class WassersteinLoss(GANLoss):
    """Critic objective of Arjovsky et al. 2017; needs a Lipschitz constraint (e.g. gradient penalty)."""

    name = "wasserstein"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return -fake.mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with the 0/1 coding: real -> 1, fake -> 0."""

    name = "least_squares"

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        return 0.5 * ((fake - 1.0) ** 2).mean()
