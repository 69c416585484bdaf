"""The batched RandomAffine: torchvision's own map for each image's parameters, drawn per image, from
the global RNG; and fit_classifier calls it once per batch."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import TensorDataset
from torchvision.transforms import InterpolationMode

from ganforge.augmentation import RandomAffine, warp
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import SmallCNN, fit_classifier


@pytest.mark.parametrize(
    ("degrees", "translate", "scale"),
    [(0, (0, 0), 1.0), (10, (0, 0), 1.0), (-7, (2, -1), 1.0), (0, (0, 0), 0.95), (8, (-1, 3), 1.1)],
)
def test_each_image_gets_exactly_torchvisions_affine_map(degrees: float, translate, scale: float) -> None:
    """(A zoom that puts output pixels exactly halfway between input pixels, as 0.9 on 20 columns, may
    pick the other neighbour there: a tie in float32, decided differently.)"""
    images = (torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    expected = TF.affine(
        images, angle=degrees, translate=list(translate), scale=scale, shear=[0.0, 0.0],
        interpolation=InterpolationMode.NEAREST,
    )  # fmt: skip
    angle = torch.full((2,), math.radians(degrees), dtype=torch.float64)
    shift = torch.tensor([translate] * 2, dtype=torch.float64)
    assert torch.equal(warp(images, angle, shift, torch.full((2,), scale, dtype=torch.float64)), expected)


def test_parameters_are_drawn_per_image_within_their_ranges_and_seeded() -> None:
    image = torch.zeros(1, 1, 15, 15, dtype=torch.uint8)
    image[0, 0, 7, 7] = 255  # one bright pixel at the centre: it moves only by the shift
    batch = image.expand(200, -1, -1, -1)
    torch.manual_seed(0)
    out = RandomAffine(degrees=10, translate=[0.2, 0.2], scale=[0.9, 1.1])(batch)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    moved = [tuple((x[0] == 255).nonzero()[0].tolist()) for x in out if (x == 255).any()]
    rows, cols = {r for r, _ in moved}, {c for _, c in moved}
    assert len(set(moved)) > 10  # not one shift for the whole batch
    assert min(rows) >= 7 - 3 and max(rows) <= 7 + 3 and min(cols) >= 4 and max(cols) <= 10  # 0.2 x 15
    torch.manual_seed(0)
    assert torch.equal(RandomAffine(degrees=10, translate=[0.2, 0.2], scale=[0.9, 1.1])(batch), out)
    assert torch.equal(RandomAffine(degrees=0)(batch), batch)  # no rotation, shift or zoom: unchanged


def test_bad_parameters_are_one_line() -> None:
    for kwargs in ({"degrees": -1}, {"degrees": 5, "translate": [0.1]}, {"degrees": 5, "scale": [1.2, 1.0]}):
        with pytest.raises(GanforgeError, match=r"^augmentation: "):
            RandomAffine(**kwargs)


def test_fit_classifier_calls_a_batched_transform_once_per_batch() -> None:
    data = TensorDataset(torch.randint(0, 255, (64, 1, 16, 16), dtype=torch.uint8), torch.arange(64) % 4)
    transform = RandomAffine(degrees=10)
    with mock.patch.object(RandomAffine, "forward", side_effect=transform.forward) as forward:
        fit_classifier(SmallCNN(1, 4, 8, 16), data, torch.device("cpu"), epochs=1, batch_size=16,
                       transform=transform)  # fmt: skip
    assert [call.args[0].shape[0] for call in forward.call_args_list] == [16, 16, 16, 16]
