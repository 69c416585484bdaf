"""Count what a training step asks of the device that a GPU would make the host wait for.

On a GPU the host queues kernels and runs ahead; every read-back of a device value (`.item()`,
`float(t)`, `bool(t)`, `.tolist()`, `.cpu()`, `.numpy()`) waits until the queue has drained, and
every tensor made from Python data (`torch.tensor(x, device=...)`) is a copy the other way. Both
are counted here on any device (a CPU run shows where a GPU run would wait), with the file:line
that asked for them, together with every aten op (about one kernel launch each on a GPU).

`HostWaitCounter` is a dispatch mode: `with HostWaitCounter() as counter: ...`. `HostWaitProbe`
is a callback (`debug=host_waits`) that keeps one count per training batch and, at the end of
the fit, prints which lines read back on how many batches. Reads by the optimisers' step counters
(`torch/optim`) and by data loading are listed apart: those tensors live on the CPU even when the
weights are on a GPU.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger(__name__)

READ_BACK = torch.ops.aten._local_scalar_dense.default
FROM_HOST = torch.ops.aten.lift_fresh.default  # torch.tensor / torch.as_tensor of Python data
PATCHED = ("tolist", "cpu", "numpy")  # read-backs that do not dispatch an aten op
TORCH = str(Path(torch.__file__).parent) + os.sep
SITE_PACKAGES = os.path.dirname(TORCH.rstrip(os.sep)) + os.sep
# code whose tensors live on the CPU on every machine: the optimisers' `step` counters, data loading
# (samplers, loaders, packs); their reads make no GPU wait
CPU_RESIDENT = (
    TORCH + "optim" + os.sep,
    TORCH + os.path.join("utils", "data") + os.sep,
    SITE_PACKAGES + "torchdata" + os.sep,
    os.path.join(os.path.dirname(__file__), "datamodules") + os.sep,
)
# where a GPU trains, a CPU tensor's read waits for nothing; on a CPU-only machine every tensor stands
# in for the device tensor it would be on a GPU
ACCELERATED = torch.cuda.is_available() or torch.backends.mps.is_available()


def waits(tensor: torch.Tensor) -> bool:
    return tensor.device.type != "cpu" or not ACCELERATED


@dataclass
class StepCount:
    ops: int = 0
    read_backs: Counter[str] = field(default_factory=Counter)  # file:line -> how many
    from_host: Counter[str] = field(default_factory=Counter)

    @property
    def device_read_backs(self) -> int:
        return sum(n for site, n in self.read_backs.items() if not site.startswith(CPU_RESIDENT))

    @property
    def device_from_host(self) -> int:
        return sum(n for site, n in self.from_host.items() if not site.startswith(CPU_RESIDENT))


def caller() -> str:
    """file:line of the innermost frame outside torch (CPU-resident torch code counts as a caller)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and (not name.startswith(TORCH) or name.startswith(CPU_RESIDENT)):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


class HostWaitCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = StepCount()
        self._originals: dict[str, Any] = {}

    def take(self) -> StepCount:
        """The count since the last `take` (or the start), and a fresh one from here on."""
        count, self.count = self.count, StepCount()
        return count

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count.ops += 1
        if func is READ_BACK and waits(args[0]):
            self.count.read_backs[caller()] += 1
        elif func is FROM_HOST and waits(args[0]):
            self.count.from_host[caller()] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> HostWaitCounter:
        for name in PATCHED:
            original = self._originals[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._counted(original))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        self._originals.clear()

    def _counted(self, method: Any) -> Any:
        def read_back(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if waits(tensor):
                self.count.read_backs[caller()] += 1
            return method(tensor, *args, **kwargs)

        return read_back


class HostWaitProbe(Callback):
    """One `StepCount` per training batch in `steps`: from the start of a batch to the start of the
    next (its training step, every callback's batch-end hook, the loggers, the next batch's loading)."""

    def __init__(self) -> None:
        self.counter: HostWaitCounter | None = None
        self.steps: list[StepCount] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # first among the callbacks: a batch's count starts before any other callback's hooks
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.counter is None:  # the first batch
            self.counter = HostWaitCounter().__enter__()
            self.steps = []
        else:
            self.steps.append(self.counter.take())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.counter is not None:
            self.steps.append(self.counter.take())
        self.close()
        if trainer.is_global_zero:
            log.info("%s", self.report())

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.counter is not None:
            self.counter.__exit__(None, None, None)
            self.counter = None

    def report(self) -> str:
        """Per line that reads back: on how many of the batches, and how often in all."""
        sites: Counter[str] = Counter()
        batches: Counter[str] = Counter()
        for step in self.steps:
            sites.update(step.read_backs)
            batches.update(step.read_backs.keys())
        waiting = sum(1 for step in self.steps if step.device_read_backs)
        ops = statistics.median(step.ops for step in self.steps) if self.steps else 0
        lines = [
            f"host waits: {waiting} of {len(self.steps)} training batches read a device value back "
            f"(a GPU waits for its queue to drain at each); {ops:g} aten ops in the median batch"
        ]
        for site, n in sites.most_common():
            apart = (
                "  (CPU-resident: optimiser counters, data loading; no wait)"
                if site.startswith(CPU_RESIDENT)
                else ""
            )
            lines.append(f"  {n:6d} reads on {batches[site]:5d} batches  {site}{apart}")
        return "\n".join(lines)
