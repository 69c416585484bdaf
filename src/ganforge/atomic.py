"""Writes that readers never see half-done: a temporary file in the target folder, fsync, `os.replace`;
a whole folder written beside its target and renamed into place.

Lightning's own writer stages in `$TMPDIR` and moves the file; when that is another filesystem the
move is a copy, and a full disk leaves a truncated checkpoint under the real name. Here the rename
stays within one folder (atomic on POSIX), and a failed write removes its partial file and leaves
the previous version in place.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil
import torch

from ganforge.errors import GanforgeError, Interrupted

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
MANY_FILES = 1000  # removing more than this many files is announced: it can take seconds
REMOVERS = 32  # threads that unlink files at once; they wait on the disk, not on the CPUs
LOG_DIR = "paths.log_dir (paths.cache_dir for caches)"  # the setting that moves what most writes go to


def write_error(path: Path, err: OSError, setting: str = LOG_DIR) -> GanforgeError:
    """The one-line error for a file or folder ganforge could not write, with the fix: free space or
    permissions, or point `setting` elsewhere."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return GanforgeError(
            f"no space left to write {path.name} in {path.parent} ({err.strerror}); free space there or "
            f"point {setting} at another disk. Nothing was overwritten"
        )
    return GanforgeError(
        f"cannot write {path} ({err.strerror}); make {path.parent} writable or point {setting} elsewhere"
    )


def atomic_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically; a GanforgeError naming the folder if the write fails."""
    return _atomic_write(path, lambda f: torch.save(obj, f), LOG_DIR)


def atomic_write_text(text: str, path: str | Path, setting: str = LOG_DIR) -> Path:
    """`path.write_text(text)`, atomically: a full disk leaves the previous file, not an empty one."""
    return _atomic_write(path, lambda f: f.write(text.encode()), setting)


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], setting: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # never there, or a read-only folder
            tmp.unlink()
        cause = os_error(err)
        if cause is not None:
            raise write_error(path, cause, setting) from err
        raise
    return path


def os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`: torch.save reports a full disk as a RuntimeError from its zip writer,
    raised while the OSError is being handled."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def staging(target: Path, pid: int) -> tuple[Path, Path]:
    """The hidden siblings of `target` that process `pid` writes its new version in, and moves the
    previous version to while it swaps them."""
    partial, replaced = (target.with_name(f".{target.name}.{kind}-{pid}") for kind in ("partial", "replaced"))
    return partial, replaced


def remove_stale(target: Path) -> None:
    """Remove what writers of `target` that no longer run (`kill -9`, a power cut, an older ganforge)
    left beside it: their partial folders, and the previous version they swapped out once `target`
    holds its successor (until then it is the only copy, and stays). Only these names, only dead pids."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|replaced)-(\d+)")
    for entry in target.parent.iterdir() if target.parent.is_dir() else ():
        found = pattern.fullmatch(entry.name)
        if found is None or psutil.pid_exists(int(found[2])):
            continue
        if found[1] == "replaced" and not target.is_dir():
            continue
        log.info("removing %s, left by a process (%s) that stopped while writing %s", entry, found[2], target)
        shutil.rmtree(entry, ignore_errors=True)


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM, while `active()`, raise Interrupted(`<SIGNAL>: message`) where the
    program stands instead of killing it there, so `finally` blocks clean up and the entry script ends
    in one line with exit code 130 or 143. Inside `held()` they wait until the block is done. Python
    runs handlers in the main thread only: elsewhere signals keep their handlers."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.holding = False
        self.pending: int | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.holding:
            self.pending = signum
            return
        raise Interrupted(f"{signal.Signals(signum).name}: {self.message}", signum)

    @contextmanager
    def active(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextmanager
    def held(self, message: str) -> Iterator[None]:
        """A block no stopping signal splits: one that comes meanwhile raises after it, with `message`."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            raise Interrupted(f"{signal.Signals(self.pending).name}: {message}", self.pending)


@contextmanager
def staged_dir(target: Path, check: Callable[[], None], setting: str) -> Iterator[Path]:
    """A new folder beside `target` to write into, which replaces `target` whole when the block ends
    (after `check()`, which may still refuse): readers see the old folder or the new one, never half of
    one. A failure, Ctrl-C or SIGTERM removes it and leaves `target` as it was; a write that fails for
    space or permission ends in write_error's one line naming `setting`. Leftovers of dead writers go
    first (remove_stale)."""
    tmp, old = staging(target, os.getpid())
    stop = StopSignals(f"stopped writing {target}, which is as it was; nothing half-written is left")
    with stop.active():
        try:
            remove_stale(target)
            shutil.rmtree(tmp, ignore_errors=True)  # a dead process's, which had this pid
            tmp.mkdir(parents=True)
            yield tmp
            check()
            with stop.held(f"stopped once {target} was written in full"):
                replacing = target.exists()
                if replacing:
                    target.rename(old)
                try:
                    tmp.rename(target)
                except OSError:
                    if replacing:
                        old.rename(target)  # the previous version back: there is never no `target`
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as err:
            cause = None if isinstance(err, GanforgeError) else os_error(err)
            if cause is not None:
                raise write_error(target, cause, setting) from err
            raise
        finally:
            if tmp.exists():  # not moved into place: a failure's, or a stop's
                with stop.held(stop.message):  # a second Ctrl-C would leave the rest behind
                    remove_partial(tmp, target)


def remove_partial(folder: Path, target: Path) -> None:
    """Remove a partly written `folder`, saying so when it holds many files. Unlinking files
    just written waits on the disk (an export's 10^5 small files: a minute, one at a time), so a pool of
    threads unlinks them and waits together."""
    files = [os.path.join(parent, name) for parent, _, names in os.walk(folder) for name in names]
    if len(files) > MANY_FILES:
        log.warning("removing the partial %s (%s files written so far) …", target, f"{len(files):,}")
    with ThreadPoolExecutor(REMOVERS) as pool:
        list(pool.map(_unlink, files, chunksize=256))
    shutil.rmtree(folder, ignore_errors=True)  # the folders, and what could not be unlinked


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
