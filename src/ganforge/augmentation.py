"""Standard augmentation for the downstream classifier, a whole batch in one call.

A torchvision v2 transform draws one set of random parameters per call, so each image of a batch
has to go through it alone: about 8 ms an image on a CPU, most of an augmented downstream row's time
(2.5 minutes of a 300-step row at batch 64). `RandomAffine` takes torchvision's `RandomAffine`
parameters, draws a rotation, shift and zoom per image and warps the batch with one `grid_sample`.
A transform with `batched = True` is called once per batch by `fit_classifier`; any other transform
(any torchvision v2 transform in `augmentation`) still image by image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ganforge.errors import GanforgeError


class RandomAffine(nn.Module):
    """Per image: rotation in [-degrees, degrees], shift up to translate x (width, height) in whole
    pixels, zoom in `scale`, about the centre; nearest-neighbour, zeros outside (as torchvision's
    `RandomAffine` with its defaults). uint8 [N, C, H, W] in and out; parameters from the global RNG
    on the CPU, so a seed gives the same images on any device."""

    batched = True

    def __init__(
        self,
        degrees: float,
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        translate = tuple(translate) if translate is not None else (0.0, 0.0)
        scale = tuple(scale) if scale is not None else (1.0, 1.0)
        if degrees < 0 or len(translate) != 2 or not all(0 <= t <= 1 for t in translate):
            raise GanforgeError(
                f"augmentation: degrees must be >= 0 and translate two fractions in [0, 1], got {degrees}, "
                f"{list(translate)}"
            )
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise GanforgeError(
                f"augmentation: scale must be [low, high] with 0 < low <= high, got {list(scale)}"
            )
        self.degrees, self.translate, self.scale = float(degrees), translate, scale

    def forward(self, images: Tensor) -> Tensor:
        n, _, height, width = images.shape
        angle = (torch.rand(n, dtype=torch.float64) * 2 - 1) * math.radians(self.degrees)
        shift = torch.stack(
            [
                torch.round((torch.rand(n, dtype=torch.float64) * 2 - 1) * self.translate[0] * width),
                torch.round((torch.rand(n, dtype=torch.float64) * 2 - 1) * self.translate[1] * height),
            ],
            1,
        )
        zoom = self.scale[0] + torch.rand(n, dtype=torch.float64) * (self.scale[1] - self.scale[0])
        return warp(images, angle, shift, zoom)


def warp(images: Tensor, angle: Tensor, shift: Tensor, zoom: Tensor) -> Tensor:
    """Each uint8 image through its own affine map (angle in radians, shift in pixels, zoom)."""
    n, _, height, width = images.shape
    theta = inverse_affine(angle, shift, zoom, width, height)
    grid = nn.functional.affine_grid(
        theta.to(images.device, torch.float32), [n, 1, height, width], align_corners=False
    )
    warped = nn.functional.grid_sample(
        images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return warped.round().to(torch.uint8)


def inverse_affine(angle: Tensor, shift: Tensor, zoom: Tensor, width: int, height: int) -> Tensor:
    """`affine_grid`'s theta [N, 2, 3]: for each output pixel (normalised coordinates) the input pixel
    that the forward map x -> zoom * R(angle) x + shift (pixels, about the centre) sends there."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    # the inverse in pixels, R(-angle) / zoom; to normalised coordinates by D = diag(2/W, 2/H)
    m00, m01 = cos / zoom, sin / zoom * (height / width)
    m10, m11 = -sin / zoom * (width / height), cos / zoom
    tx, ty = 2 * shift[:, 0] / width, 2 * shift[:, 1] / height
    row0 = torch.stack([m00, m01, -(m00 * tx + m01 * ty)], 1)
    row1 = torch.stack([m10, m11, -(m10 * tx + m11 * ty)], 1)
    return torch.stack([row0, row1], 1)
