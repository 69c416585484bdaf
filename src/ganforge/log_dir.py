"""Hydra callback: an unusable `paths.log_dir` (read-only, full, a file in the way) is refused in one
line before Hydra creates the run directory in it (Hydra's own failure there is a traceback)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def check_writable(log_dir: str) -> None:
    """Create `log_dir` and write a probe file in it (permission bits alone miss read-only mounts,
    full disks and root); exits with `error: ...` when that fails."""
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=log_dir) as probe:
            probe.write(b"ganforge")
            probe.flush()
    except OSError as err:
        print(
            f"error: cannot write to paths.log_dir={log_dir} ({err.strerror}); pass a writable folder, "
            "e.g. paths.log_dir=/tmp/ganforge-logs",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None


class CheckLogDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(str(config.paths.log_dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(str(config.paths.log_dir))
