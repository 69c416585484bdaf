"""CUDA graphs for the GAN updates (`model.cuda_graphs=true`).

A DCGAN step on a fast GPU is a few hundred short kernels, and launching them one by one from Python
costs more than running them. Here the forward and backward pass of each kind of update (the D
update, the D update with lazy R1, the G update) is captured once into a CUDA graph and then replayed
with one launch: the batch is copied into the graph's input buffer, the noise is drawn inside the
graph (each replay draws anew, from the same generator as eager code), and the gradients land in the
same tensors at every replay. The optimizer steps, the EMA and the schedulers stay outside, run
eagerly through Lightning, so its step counts, the learning rates and checkpoints are those of a
plain model.

Each update runs eagerly on a side stream for its first `WARMUP` calls (cuDNN picks its kernels,
gradients and optimizer state get allocated) and is captured at the next. Only what stays fixed can
be replayed: the host decisions inside an update are taken once, at capture, so an update with another
decision or another input shape is another graph.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganforge.errors import GanforgeError

WARMUP = 3  # eager calls of an update before it is captured
Update = Callable[..., dict[str, Tensor]]  # inputs -> statistics (0-d tensors)
Capture = Callable[[Callable[[], dict[str, Tensor]]], tuple[Callable[[], None], dict[str, Tensor]]]


def graph_capture(device: torch.device) -> Capture | None:
    """How updates on `device` are captured: each into a CUDA graph with its own memory pool (they
    replay in any order); None where there are no graphs (every update then runs eagerly). Only this
    thread's calls are checked during a capture: the loader's pinning thread may allocate meanwhile."""
    if device.type != "cuda":
        return None

    def capture(thunk: Callable[[], dict[str, Tensor]]) -> tuple[Callable[[], None], dict[str, Tensor]]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = thunk()
        return graph.replay, outputs

    return capture


@dataclass
class Captured:
    inputs: list[Tensor]  # the buffers the graph reads: each call copies its inputs into them
    replay: Callable[[], None]
    outputs: dict[str, Tensor]  # rewritten by every replay: read them before the next one


class GraphedUpdates:
    """Runs updates eagerly `WARMUP` times, then captures each and replays it.

    `parameters` are the trainable parameters whose gradients the updates write. They must keep
    their `.grad` tensors across calls (zero them in place, never set them to None): the graphs write
    into those tensors, where the optimizers read them."""

    def __init__(self, parameters: Sequence[nn.Parameter], capture: Capture) -> None:
        self.parameters = list(parameters)
        self._capture = capture
        self._graphs: dict[Hashable, Captured] = {}
        self._calls: Counter[Hashable] = Counter()

    def __call__(self, name: str, update: Update, *inputs: Tensor) -> dict[str, Tensor]:
        """`update(*inputs)`; `name` tells kinds of update apart (and names them in errors)."""
        key = (name, *(tuple(x.shape) for x in inputs))
        if key not in self._graphs:
            self._calls[key] += 1
            if self._calls[key] <= WARMUP:
                return self._warm_up(update, inputs)
            self._graphs[key] = self._captured(key, update, inputs)
        captured = self._graphs[key]
        for buffer, x in zip(captured.inputs, inputs, strict=True):
            buffer.copy_(x, non_blocking=True)
        captured.replay()
        return captured.outputs

    def _warm_up(self, update: Update, inputs: Sequence[Tensor]) -> dict[str, Tensor]:
        """An eager call; on CUDA on a side stream, as PyTorch asks of the calls before a capture."""
        if not self.parameters[0].is_cuda:
            return update(*inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            outputs = update(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return outputs

    def _captured(self, key: Hashable, update: Update, inputs: Sequence[Tensor]) -> Captured:
        grads = [p.grad for p in self.parameters]
        buffers = [x.clone() for x in inputs]
        try:
            replay, outputs = self._capture(lambda: update(*buffers))
        except RuntimeError as err:  # e.g. a read-back inside the update: "operation not permitted"
            raise GanforgeError(
                f"the {key[0]} update cannot be captured in a CUDA graph ({' '.join(str(err).split())}); "
                "set model.cuda_graphs=false"
            ) from err
        if any(p.grad is not g for p, g in zip(self.parameters, grads, strict=True)):
            raise GanforgeError(  # the graphs would write gradients the optimizers no longer read
                f"the {key[0]} update replaced gradient tensors while captured in a CUDA graph (something "
                "holds a reference to them); set model.cuda_graphs=false"
            )
        return Captured(buffers, replay, outputs)
