"""An exponential moving average of the generator (Yazici et al. 2019) that never waits for the GPU.

`torch.optim.swa_utils.AveragedModel.update_parameters` tests its device-resident counter
(`n_averaged == 0`, `n_averaged > 0`) at every update: two host read-backs per generator step.
This one keeps AveragedModel's state (`module.*`, `n_averaged`: checkpoints are unchanged) and its
arithmetic (the first update copies, later ones lerp, buffers included), but counts updates on the host
as well, reading the counter only when a checkpoint is loaded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


class GeneratorEMA(AveragedModel):
    def __init__(self, generator: nn.Module, decay: float) -> None:
        super().__init__(generator, use_buffers=True)
        self.decay = decay
        self._updates = 0  # n_averaged, counted on the host

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ema, live = _tensors(self.module), _tensors(model)
        floats = [i for i, t in enumerate(ema) if t.is_floating_point()]
        ema_f, live_f = [ema[i] for i in floats], [live[i] for i in floats]
        if self._updates == 0:
            torch._foreach_copy_(ema_f, live_f)
        else:
            torch._foreach_lerp_(ema_f, live_f, 1 - self.decay)
        for e, m in zip(ema, live, strict=True):
            if not e.is_floating_point():  # e.g. batch norm's num_batches_tracked, as AveragedModel does
                e.copy_(m if self._updates == 0 else e * self.decay + m * (1 - self.decay))
        self.n_averaged += 1
        self._updates += 1

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        loaded = state_dict.get(f"{prefix}n_averaged")
        if loaded is not None:
            self._updates = int(loaded)  # the checkpoint's copy, read at load, not in a training step


def _tensors(module: nn.Module) -> list[Tensor]:
    return [t.detach() for t in (*module.parameters(), *module.buffers())]
