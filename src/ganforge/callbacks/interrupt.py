"""Ctrl-C stops a run the way SIGTERM (a scheduler's pre-emption, `kill`) does: after the batch in
progress, with a resumable `last.ckpt` (written by GANCheckpoint) and exit code 130 (143 for SIGTERM).

Lightning already turns SIGTERM into a `SIGTERMException` raised between batches; this callback
routes SIGINT into the same handler and remembers which signal it was. A second Ctrl-C aborts at
once, without saving.
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
    def __init__(self) -> None:
        self.received: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning's signal connector restores the previous SIGINT handler at teardown
        self.received = None
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_sigint)

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

    def signal_received(self, trainer: Trainer) -> int | None:
        """SIGINT or SIGTERM if one stopped this fit, else None."""
        if self.received is not None:
            return self.received
        return signal.SIGTERM if trainer.received_sigterm else None
