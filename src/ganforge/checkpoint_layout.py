"""What a ganforge run writes as checkpoints and what they hold, in one place.

    <run>/checkpoints/
      g_step_0000500.ckpt  every callbacks.model_checkpoint.every_n_g_steps generator steps (kept)
      last.ckpt            the newest state (overwritten): what resuming and a requeued job continue
      best.ckpt            the state at the best val/fid (val/reverse_kl for 2-D mixtures) so far

Each file is Lightning's checkpoint (weights, optimizer states, loops, callback states) plus the
entries below. Writers: `callbacks.checkpoint` (the files), `callbacks.store_config.StoreConfig`
(CONFIG), `GANLitModule.on_save_checkpoint` (STEPS, RNG, GRAD_SCALERS, TRAINING_STATS). Readers:
`ganforge.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "ganforge"  # {"config": the resolved run config, "version"}: the file alone rebuilds its model
STEPS = "gan_steps"  # {"g_step", "d_step"}: budgets, file names and sample grids count these
RNG = "rng_states"  # every RNG at the batch boundary: a resumed run draws the noise it would have drawn
GRAD_SCALERS = "grad_scalers"  # one GradScaler state per network (trainer.precision=16-mixed only)
# the logging interval in progress (host sums): a resumed run logs the same means as one never stopped
TRAINING_STATS = "training_stats"

DIRECTORY = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
NUMBERED = "g_step_{g_step:07.0f}"  # Lightning's filename template; zero-padded: name order is step order


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run directory: `last.ckpt` (written at every numbered one, so never
    older), else the highest `g_step_*.ckpt`; None when it holds none."""
    folder = Path(run_dir) / DIRECTORY
    if (folder / LAST).is_file():
        return folder / LAST
    numbered = sorted(folder.glob("g_step_*.ckpt"))
    return numbered[-1] if numbered else None


def newest_checkpoint(run_dirs: list[Path]) -> Path | None:
    """The most recently written checkpoint among `run_dirs` (what `ckpt_path=last` continues)."""
    found = [c for c in map(find_checkpoint, run_dirs) if c is not None]
    return max(found, key=lambda c: c.stat().st_mtime, default=None)
