"""Each loss against hand-computed values, and the direction each network is pushed."""

from __future__ import annotations

import math

import pytest
import torch

from ganforge.losses import HingeLoss, LeastSquaresLoss, NonSaturatingLoss, WassersteinLoss

REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-1.0, 0.0])


def test_non_saturating_matches_bce() -> None:
    loss = NonSaturatingLoss()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected_d = bce(REAL, torch.ones(2)) + bce(FAKE, torch.zeros(2))
    assert torch.allclose(loss.d_loss(REAL, FAKE), expected_d)
    assert torch.allclose(loss.g_loss(FAKE), bce(FAKE, torch.ones(2)))
    assert loss.d_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(2 * math.log(2))
    assert torch.allclose(loss.score(torch.zeros(3)), torch.full((3,), 0.5))


def test_hinge() -> None:
    loss = HingeLoss()
    # relu(1 - [2, .5]) = [0, .5] -> .25 ; relu(1 + [-1, 0]) = [0, 1] -> .5
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.75)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5)


def test_wasserstein() -> None:
    loss = WassersteinLoss()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(-0.5 - 1.25)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5)


def test_least_squares() -> None:
    loss = LeastSquaresLoss()
    # .5 * mean([1, .25]) + .5 * mean([1, 0]) ; .5 * mean([4, 1])
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.3125 + 0.25)
    assert loss.g_loss(FAKE).item() == pytest.approx(1.25)


@pytest.mark.parametrize("loss", [NonSaturatingLoss(), HingeLoss(), WassersteinLoss(), LeastSquaresLoss()])
def test_gradients_push_the_right_way(loss) -> None:
    """D's loss falls as real outputs rise and fake outputs fall; G's loss falls as fake outputs rise."""
    # at 0.5: inside every loss's active region (LSGAN's fake target 0 would give a zero gradient)
    real = torch.full((4,), 0.5, requires_grad=True)
    fake = torch.full((4,), 0.5, requires_grad=True)
    loss.d_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake.grad = None
    loss.g_loss(fake).backward()
    assert (fake.grad < 0).all()
