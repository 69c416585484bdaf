"""The checkpoint files of a run (ganforge.checkpoint_layout), written by Lightning's ModelCheckpoint.

`GANCheckpoint` counts generator steps and keeps a `last.ckpt` that is always recent and always
written at a batch boundary, so resuming from it continues exactly:
- `g_step_NNNNNNN.ckpt` every `every_n_g_steps` generator steps (kept);
- `last.ckpt` every `last_every_minutes` of wall time (overwritten: a crash loses minutes, not
  hours; on a GPU a step count would mean a write every second), or every `last_every_n_g_steps`
  when set, at the final step, and when SIGTERM or Ctrl-C stops the run (after the step in progress).
  (ganforge.callbacks.wall_clock says when).
Lightning's own end-of-training save comes after the fit loop has counted a stopped epoch as
finished; a checkpoint from there resumes one epoch ahead, so the final save happens here instead.

`BestCheckpoint` keeps `best.ckpt` at the best value the sample-quality callback has measured.

A run directory that was moved or copied keeps its checkpoints: both callbacks take the files their
state names from where they are now (Lightning's own forgets them when the directory changes, and a
finished run started again in its new place would have nothing to synthesize from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ganforge.callbacks.sample_quality import SampleQualityCallback
from ganforge.callbacks.wall_clock import WallClock
from ganforge.checkpoint_layout import BEST, NUMBERED
from ganforge.errors import GanforgeError


def in_moved_run(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """`state` with its files in `dirpath` when they are there under the same names: the run
    directory moved. A run resumed into a new directory from another run's checkpoint has none of
    them, and keeps Lightning's behaviour (its best and last checkpoints are still to come)."""
    old = state.get("dirpath")
    if not old or dirpath is None or old == dirpath:
        return state
    keys = ("best_model_path", "kth_best_model_path", "last_model_path")
    moved = {k: str(Path(dirpath) / Path(state[k]).name) for k in keys if state.get(k)}
    moved_k = {str(Path(dirpath) / Path(p).name): v for p, v in state.get("best_k_models", {}).items()}
    if not all(Path(p).is_file() for p in [*moved.values(), *moved_k]):
        return state
    return state | moved | {"dirpath": dirpath, "best_k_models": moved_k}


class GANCheckpoint(ModelCheckpoint):
    def __init__(
        self,
        dirpath: str,
        every_n_g_steps: int = 500,
        last_every_minutes: float | None = 10.0,
        last_every_n_g_steps: int | None = None,
    ) -> None:
        for name, value in (
            ("every_n_g_steps", every_n_g_steps),
            ("last_every_n_g_steps", last_every_n_g_steps),
        ):
            if value is not None and value < 1:
                raise GanforgeError(f"callbacks.model_checkpoint.{name} must be >= 1 or null, got {value}")
        # the triggers are generator steps and minutes, counted here: Lightning's own are off
        super().__init__(
            dirpath,
            NUMBERED,
            save_top_k=-1,
            save_last=True,
            auto_insert_metric_name=False,
            every_n_train_steps=0,
            every_n_epochs=0,
            save_on_train_epoch_end=False,
        )
        self.every_n_g_steps = every_n_g_steps
        self.last_every_n_g_steps = last_every_n_g_steps
        self.last_clock = WallClock(last_every_minutes, "callbacks.model_checkpoint.last_every_minutes")
        self._saved_g_step: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.last_clock.restart()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        g = pl_module.g_step
        if g == 0 or g == self._saved_g_step or pl_module.d_step % pl_module.d_steps_per_g:
            return  # nothing new, or a discriminator-only batch
        final = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        numbered = g % self.every_n_g_steps == 0
        by_steps = self.last_every_n_g_steps is not None and g % self.last_every_n_g_steps == 0
        if numbered or final or by_steps or self.last_clock.due(trainer, pl_module):
            self.save(trainer, numbered=numbered)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """SIGTERM (and Ctrl-C, which ganforge turns into the same path) stops the loop after a batch."""
        if isinstance(exception, SIGTERMException) and pl_module.g_step != self._saved_g_step:
            self.save(trainer, numbered=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A budget in epochs ends at an epoch boundary: the state after it is the last one."""
        if pl_module.g_step != self._saved_g_step:
            self.save(trainer, numbered=False)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(in_moved_run(state_dict, self.dirpath))

    def save(self, trainer: Trainer, numbered: bool) -> None:
        candidates = self._monitor_candidates(trainer)
        if numbered:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._saved_g_step = trainer.lightning_module.g_step
        self.last_clock.restart()


class BestCheckpoint(ModelCheckpoint):
    """`best.ckpt`, the whole training state (it can be resumed from) at the best `monitor` value so far.

    `monitor: auto` follows the sample-quality evaluator's primary metric (val/fid; val/reverse_kl for
    the 2-D mixtures). The value is compared after each evaluation, on every rank at once (Lightning
    reduces the decision across ranks); without sample-quality metrics no best.ckpt is written.
    """

    def __init__(self, dirpath: str, monitor: str = "auto", mode: str = "min") -> None:
        super().__init__(
            dirpath,
            Path(BEST).stem,
            monitor=None if monitor == "auto" else monitor,
            mode=mode,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # one best.ckpt, replaced in place
            every_n_train_steps=0,
            every_n_epochs=0,
            save_on_train_epoch_end=False,
        )
        self.auto_monitor = monitor == "auto"
        self.quality: SampleQualityCallback | None = None
        self.best_g_step: int | None = None
        self._compared_g_step: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Lightning runs ModelCheckpoint hooks after all other callbacks': the evaluator exists by now
        found = [cb for cb in trainer.callbacks if isinstance(cb, SampleQualityCallback)]
        self.quality = found[0] if found and found[0].evaluator is not None else None
        if self.quality is not None and self.auto_monitor:
            self.monitor = f"val/{self.quality.evaluator.primary}"
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        g = pl_module.g_step
        if self.quality is None or self.monitor is None or self.quality.last_g_step != g:
            return  # no evaluation at this step
        if g == self._compared_g_step:
            return
        self._compared_g_step = g
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        self.best_g_step = trainer.lightning_module.g_step  # before the write, so best.ckpt holds it
        super()._save_checkpoint(trainer, filepath)

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"best_g_step": self.best_g_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(in_moved_run(state_dict, self.dirpath))
        if self.best_model_score is None:  # resumed into another run directory: its best.ckpt is to come
            self.best_model_path = ""
        else:
            self.best_g_step = state_dict.get("best_g_step")
