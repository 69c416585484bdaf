"""Every way to stop a run ends it the same way: after a batch, with a resumable `last.ckpt` (written by
GANCheckpoint) and exit code 128 + the signal: Ctrl-C (SIGINT, 130), SIGTERM (`kill`, a scheduler's
pre-emption, 143) and, in a SLURM job, the requeue signal (ganforge.cluster), after which the job
requeues. A second Ctrl-C aborts at once, without saving.

A signal handler only records the signal. A collective started from a handler is what hangs a
multi-process run: Lightning's own SIGTERM handler broadcasts from inside the handler, a collective
the other ranks, busy elsewhere, never join. The ranks of a run receive a signal at different
moments, or only one of them does (`kill <pid>` of one rank), so they agree on the batch to stop
after: a max-reduce of the recorded signal every `trainer.log_every_n_steps` batches, the same
batches on every rank (every batch in a single process). Then every rank sets Lightning's stop flag,
which Lightning checks after that batch, saves together and exits with the same signal's code.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

NO_SIGNAL = 0


class GracefulInterrupt(Callback):
    def __init__(self, requeue_signal: int | None = None) -> None:
        self.requeue_signal = requeue_signal
        self.pending = NO_SIGNAL  # recorded by the handler; not yet agreed on by every rank
        self.received: int | None = None  # the signal every rank stops for
        self.ctrl_c = False  # a second Ctrl-C aborts
        self.started_at_g_step: int | None = None  # after a resume: the checkpoint's g_step

    @property
    def stop_signals(self) -> list[int]:
        extra = [self.requeue_signal] if self.requeue_signal is not None else []
        return [signal.SIGINT, signal.SIGTERM, *extra]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning registered its handlers, which its signal connector restores at teardown
        self.pending, self.received, self.ctrl_c = NO_SIGNAL, None, False
        self.started_at_g_step = pl_module.g_step
        if trainer.world_size > 1:
            # Lightning broadcasts rank 0's SIGTERM flag before every batch: a collective and a
            # host wait per batch, and redundant: the agreement below sets that flag on every rank
            trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = lambda: None
        if threading.current_thread() is threading.main_thread():
            for signum in self.stop_signals:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.ctrl_c:
                raise KeyboardInterrupt  # the second Ctrl-C
            self.ctrl_c = True
        first = self.pending == NO_SIGNAL
        self.pending = max(self.pending, signum)
        if not first:
            return
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            log.warning(
                "Ctrl-C: stopping after this batch and saving a checkpoint (press Ctrl-C again to abort "
                "without saving)"
            )
        elif signum == self.requeue_signal:
            log.warning(
                "%s from SLURM (pre-emption or time limit): saving a checkpoint after this batch, then "
                "requeueing the job",
                name,
            )
        else:
            log.warning("%s: stopping after this batch and saving a checkpoint", name)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        agreed = self.pending
        if trainer.world_size > 1:
            if pl_module.d_step % trainer.log_every_n_steps:  # the same batches on every rank
                return
            mine = torch.tensor(self.pending, device=trainer.strategy.root_device)
            agreed = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if agreed != NO_SIGNAL:
            self.received = agreed  # also on a rank the signal has not reached
            trainer._signal_connector.received_sigterm = True  # Lightning stops after this batch

    def progressed(self, pl_module: LightningModule) -> bool:
        """Whether this fit trained at least one generator step."""
        return self.started_at_g_step is not None and pl_module.g_step > self.started_at_g_step

    def signal_received(self, trainer: Trainer) -> int | None:
        """SIGINT, SIGTERM or the requeue signal if one stopped this fit, else None."""
        if self.received is not None:
            return self.received
        return signal.SIGTERM if trainer.received_sigterm else None
