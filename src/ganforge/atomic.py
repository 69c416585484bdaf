"""Writes that readers never see half-done: a temporary file in the target folder, fsync, `os.replace`.

Lightning's own writer stages in `$TMPDIR` and moves the file; when that is another filesystem the
move is a copy, and a full disk leaves a truncated checkpoint under the real name. Here the rename
stays within one folder (atomic on POSIX), and a failed write removes its partial file and leaves
the previous version in place.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from ganforge.errors import GanforgeError


def write_error(path: Path, err: OSError) -> GanforgeError:
    """The one-line error for a file ganforge could not write, with the fix."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return GanforgeError(
            f"no space left to write {path.name} in {path.parent} ({err.strerror}); free space there or "
            "point paths.log_dir (paths.cache_dir for caches) at another disk. Nothing was overwritten"
        )
    return GanforgeError(
        f"cannot write {path} ({err.strerror}); make {path.parent} writable or point paths.log_dir "
        "(paths.cache_dir for caches) elsewhere"
    )


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically; a GanforgeError naming the folder if the write fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = os_error(err)
        if cause is not None:
            raise write_error(path, cause) from err
        raise
    return path


def os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`: torch.save reports a full disk as a RuntimeError from its zip writer,
    raised while the OSError is being handled."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err
