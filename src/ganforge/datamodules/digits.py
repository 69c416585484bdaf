"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped with the library (no download).

The offline default: small enough to train a recognisable DCGAN on a laptop CPU in minutes.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from ganforge.datamodules.base import ImageDataModule, split_indices, subset


class DigitsDataModule(ImageDataModule):
    num_classes = 10

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__("", image_size, channels, **kwargs)
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        pixels, labels = load_digits(return_X_y=True)  # intensities 0..16
        images = torch.from_numpy(pixels).mul(255 / 16).round().to(torch.uint8).view(-1, 1, 8, 8)
        full = self.in_memory(images, torch.from_numpy(labels))
        train, val, test = split_indices(len(labels), self.fractions, self.split_seed)
        self.data_train, self.data_val, self.data_test = (subset(full, i) for i in (train, val, test))
        self.select_train_subset()
