"""Ctrl-C stops a run the way SIGTERM (a scheduler's pre-emption, `kill`) does: after the batch in
progress, with a resumable `last.ckpt` (written by GANCheckpoint) and exit code 130 (143 for SIGTERM).
In a SLURM job the requeue signal (ganforge.cluster) stops it the same way, before the job requeues.
The ranks of a job receive that signal at different moments, so they agree on the batch to stop after
(an any-reduce every `trainer.log_every_n_steps` batches); a rank that stopped alone would leave the
others waiting in the next batch's collective for ever.

Lightning already turns SIGTERM into a `SIGTERMException` raised between batches; this callback
routes SIGINT and the requeue signal into the same stop and remembers which signal it was. A second
Ctrl-C aborts at once, without saving.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class GracefulInterrupt(Callback):
    def __init__(self, requeue_signal: int | None = None) -> None:
        self.requeue_signal = requeue_signal
        self.received: int | None = None
        self.requeue_pending = False  # the requeue signal arrived; not yet agreed on by every rank
        self.started_at_g_step: int | None = None  # after a resume: the checkpoint's g_step

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's signal connector restores the previous handlers at teardown
        self.received = None
        self.requeue_pending = False
        self.started_at_g_step = pl_module.g_step
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_sigint)
            if self.requeue_signal is not None:
                signal.signal(self.requeue_signal, self._on_requeue_signal)

    def _on_requeue_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        log.warning(
            "%s from SLURM (pre-emption or time limit): saving a checkpoint after this batch, then "
            "requeueing the job",
            signal.Signals(signum).name,
        )
        # Not Lightning's SIGTERM handler, which broadcasts from inside the signal handler, a
        # collective the other ranks are not in; nor its flag at once, which Lightning also checks
        # per rank after each batch: on_train_batch_end sets it on every rank at the same batch.
        self.requeue_pending = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self.requeue_signal is None:
            return
        stop = self.requeue_pending
        if trainer.world_size > 1:
            if pl_module.d_step % trainer.log_every_n_steps:  # the same batches on every rank
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.received = self.requeue_signal  # also on a rank the signal has not reached
            trainer._signal_connector.received_sigterm = True  # Lightning stops after this batch

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C interrupts at once
        log.warning(
            "Ctrl-C: stopping after this batch and saving a checkpoint (press Ctrl-C again to abort "
            "without saving)"
        )
        sigterm_path: Any = signal.getsignal(signal.SIGTERM)  # Lightning's: stop at the next boundary
        if callable(sigterm_path):
            sigterm_path(signal.SIGTERM, frame)

    def progressed(self, pl_module: LightningModule) -> bool:
        """Whether this fit trained at least one generator step."""
        return self.started_at_g_step is not None and pl_module.g_step > self.started_at_g_step

    def signal_received(self, trainer: Trainer) -> int | None:
        """SIGINT, SIGTERM or the requeue signal if one stopped this fit, else None."""
        if self.received is not None:
            return self.received
        return signal.SIGTERM if trainer.received_sigterm else None
