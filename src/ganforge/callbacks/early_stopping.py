"""Stop training once the sample-quality metric (`val/fid`) has not improved for `patience` evaluations.

Lightning's EarlyStopping checks at the end of a validation run or a training epoch. ganforge has no
validation loop: the sample-quality callback measures every N generator steps, which need not line up
with epochs, and a check between two evaluations would count the same value again. This one checks
once after each evaluation, so `patience` counts evaluations.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping

from ganforge.callbacks.sample_quality import SampleQualityCallback
from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)


class EvaluationEarlyStopping(EarlyStopping):
    def __init__(
        self,
        monitor: str = "val/fid",
        mode: str = "min",
        patience: int = 4,
        min_delta: float = 0.0,
        verbose: bool = True,
    ) -> None:
        super().__init__(
            monitor=monitor,
            mode=mode,
            patience=patience,
            min_delta=min_delta,
            verbose=verbose,
            check_on_train_epoch_end=False,
        )
        self.quality: SampleQualityCallback | None = None
        self._checked_g_step: int | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        found = [cb for cb in trainer.callbacks if isinstance(cb, SampleQualityCallback)]
        self.quality = found[0] if found and found[0].evaluator is not None else None
        if self.quality is None:
            raise GanforgeError(
                f"callbacks.early_stopping stops on {self.monitor}, and this run measures no sample quality "
                "(metrics=none, or no feature network); set metrics=classifier or metrics=inception, or "
                "leave early_stopping out of callbacks"
            )

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        assert self.quality is not None
        evaluated = self.quality.last_g_step
        if evaluated is None or evaluated == self._checked_g_step:
            return  # no new evaluation since the last check
        self._checked_g_step = evaluated
        if self.monitor not in trainer.callback_metrics:
            measured = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith("val/")))
            raise GanforgeError(
                f"callbacks.early_stopping.monitor={self.monitor} is not measured in this run; use one of "
                f"{measured}"
            )
        self._run_early_stopping_check(trainer)

    @staticmethod
    def _log_info(trainer: Trainer, message: str, log_rank_zero_only: bool) -> None:
        """Each improvement and the reason to stop, on rank 0, through ganforge's logger: Lightning's
        own does not reach the run's log file."""
        if trainer.is_global_zero or not log_rank_zero_only:
            log.info(message)
