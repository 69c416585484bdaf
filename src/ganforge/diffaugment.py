"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image the
discriminator sees — real and generated, in both the D and the G update — so D cannot memorise a
small training set and G still receives gradients through the augmentation.

Policies: `color` (brightness, saturation, contrast), `translation` (shift by up to
`translation_ratio` of the size, zero fill), `cutout` (a zeroed square of `cutout_ratio` of the
size). Each sample draws its own parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import GanforgeError

POLICIES = ("color", "translation", "cutout")


def _uniform(x: Tensor, low: float, high: float) -> Tensor:
    return torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(low, high)


def color(x: Tensor) -> Tensor:
    x = x + _uniform(x, -0.5, 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean  # contrast


def translation(x: Tensor, ratio: float) -> Tensor:
    n, _, h, w = x.shape
    max_dy, max_dx = round(h * ratio), round(w * ratio)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # a zero border: shifted-in pixels read from it
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: Tensor, ratio: float) -> Tensor:
    n, _, h, w = x.shape
    size_h, size_w = round(h * ratio), round(w * ratio)
    top = torch.randint(0, h - size_h + 1, (n, 1, 1), device=x.device)
    left = torch.randint(0, w - size_w + 1, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DiffAugment(nn.Module):
    def __init__(
        self,
        policy: str = "color,translation,cutout",
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.policies = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = sorted(set(self.policies) - set(POLICIES))
        if unknown:
            raise GanforgeError(
                f"DiffAugment policy {unknown} is unknown; use a comma list of {', '.join(POLICIES)}"
            )
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def forward(self, x: Tensor) -> Tensor:
        for policy in self.policies:
            if policy == "color":
                x = color(x)
            elif policy == "translation":
                x = translation(x, self.translation_ratio)
            else:
                x = cutout(x, self.cutout_ratio)
        return x

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policies)}"
