"""Discriminator regularisers that stabilise GAN training.

`gradient_penalty` (Gulrajani et al. 2017, WGAN-GP): pushes the critic's gradient norm towards 1 on
random interpolates of real and fake samples. `r1_penalty` (Mescheder et al. 2018): pushes the
discriminator's gradient towards 0 on real samples. Both return the unweighted penalty.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _input_gradients(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] with x_hat uniformly between paired real and fake samples."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = alpha * real.detach() + (1 - alpha) * fake.detach()
    return ((_input_gradients(critic, x_hat).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """E[||grad critic(x)||^2] on real samples (multiply by gamma / 2, as in the paper)."""
    return _input_gradients(critic, real).pow(2).sum(dim=1).mean()


def mode_seeking_ratio(fake: Tensor, z: Tensor) -> Tensor:
    """MSGAN (Mao et al. 2019): mean |G(z1) - G(z2)| / mean |z1 - z2| over the pairs (first half, second
    half) of a batch whose halves share their labels. The generator is penalised by its inverse, so
    different noise must make different images: the remedy for a conditional generator ignoring z."""
    h = len(z) // 2
    return (fake[:h] - fake[h : 2 * h]).abs().mean() / (z[:h] - z[h : 2 * h]).abs().mean()
