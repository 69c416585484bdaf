"""Save a grid of samples from the module's fixed noise every N generator steps and/or every N minutes
(ganforge.callbacks.wall_clock), at the start and at the end.
Conditional models get one column per class; 2-D points (the mixtures) become scatter plots.

The same noise at every step makes grids comparable over training; it lives in the checkpoint, so
a resumed run continues the same sequence.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.v2.functional import pil_to_tensor
from torchvision.utils import make_grid, save_image

from ganforge.callbacks.wall_clock import WallClock
from ganforge.gan_module import GANLitModule
from ganforge.tracking import log_image


def scatter_plot(points: Tensor, modes: Tensor, size: int) -> Tensor:
    """[3, size, size] in [0, 1]: 2-D samples as blue dots, the data's modes as red rings."""
    extent = float(modes.abs().max()) + 1.5
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)

    def pixel(p: Tensor) -> tuple[float, float]:
        return ((p[0] + extent) / (2 * extent) * size, (extent - p[1]) / (2 * extent) * size)

    for p in points.detach().float().cpu():
        draw.point(pixel(p), fill=(30, 80, 200))
    for m in modes:
        x, y = pixel(m)
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(220, 30, 30))
    return pil_to_tensor(image).float() / 255


class SampleGrid(Callback):
    def __init__(
        self,
        dirpath: str,
        every_n_g_steps: int | None = 250,
        every_n_minutes: float | None = None,
        nrow: int = 8,
        plot_size: int = 256,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_g_steps = every_n_g_steps
        self.wall_clock = WallClock(every_n_minutes, "callbacks.sample_grid.every_n_minutes")
        self.nrow = nrow
        self.plot_size = plot_size  # 2-D point data: scatter plots, this many pixels wide
        self.last_saved: int | None = None

    def path_for(self, g_step: int) -> Path:
        return self.dirpath / f"g_step_{g_step:07d}.png"

    def save(self, trainer: Trainer, module: GANLitModule) -> Path | None:
        if not trainer.is_global_zero or module.g_step == self.last_saved:
            return None
        if module.conditional:  # one column per class
            samples = module.generate(module.fixed_noise, module.fixed_labels)
            grid = self.picture(trainer, samples, nrow=module.num_classes)
        else:
            grid = self.picture(trainer, module.generate(module.fixed_noise))
        path = self.path_for(module.g_step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        log_image(trainer.loggers, "samples", grid, step=max(module.d_step - 1, 0), g_step=module.g_step)
        self.last_saved = module.g_step
        self.wall_clock.restart()
        return path

    def picture(
        self, trainer: Trainer, samples: torch.Tensor, real: bool = False, nrow: int | None = None
    ) -> torch.Tensor:
        """[3, H, W] in [0, 1]: a grid of images, or a scatter plot of points (the 2-D mixtures)."""
        modes = getattr(trainer.datamodule, "modes", None)
        if modes is not None:
            return scatter_plot(samples, modes, self.plot_size)
        nrow = nrow or self.nrow
        if real:  # uint8 training images
            return make_grid(samples.float() / 255, nrow=nrow)
        return make_grid(samples, nrow=nrow, normalize=True, value_range=(-1, 1))

    def save_real(self, trainer: Trainer, module: GANLitModule) -> None:
        """Real training data beside the samples, once: the target to compare grids against."""
        dataset = trainer.datamodule.data_train
        grid = self.picture(
            trainer,
            torch.stack([dataset[i][0] for i in range(min(len(module.fixed_noise), len(dataset)))]),
            real=True,
        )
        self.dirpath.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.dirpath / "real.png")
        log_image(trainer.loggers, "real", grid, step=max(module.d_step - 1, 0), g_step=module.g_step)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and not (self.dirpath / "real.png").exists():
            self.save_real(trainer, pl_module)
        self.save(trainer, pl_module)  # the starting point: untrained (or resumed) generator

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        by_steps = self.every_n_g_steps is not None and pl_module.g_step % self.every_n_g_steps == 0
        if by_steps or self.wall_clock.due(trainer, pl_module):
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save(trainer, pl_module)
