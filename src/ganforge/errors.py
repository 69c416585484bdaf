"""The exception types for what a user can fix or act on, and how entry scripts report them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.utilities import rank_zero_only
from omegaconf.errors import MissingMandatoryValue


class GanforgeError(Exception):
    """A user-fixable problem; entry scripts print its message on one line and exit with `exit_code`."""

    exit_code = 1


class TrainingDiverged(GanforgeError):
    """Losses or weights became non-finite or absurd; the message names the last good checkpoint."""


class Interrupted(GanforgeError):
    """SIGTERM or Ctrl-C stopped training after a batch; exits 128 + the signal, as shells expect."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class Requeued(Interrupted):
    """The SLURM requeue signal stopped training after a batch; the job goes back in the queue and its
    next start continues from the checkpoint in the same run directory."""

    def __init__(self, message: str, signum: int, job_id: str) -> None:
        super().__init__(message, signum)
        self.job_id = job_id


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn user mistakes into `error: <what to do>` on stderr and a non-zero exit (no traceback)."""
    try:
        yield
    except GanforgeError as err:
        if not (isinstance(err, Interrupted) and rank_zero_only.rank != 0):  # every rank stops alike
            sys.stderr.write(f"error: {err}\n")  # one write: the lines of several ranks do not interleave
            sys.stderr.flush()
        raise SystemExit(err.exit_code) from None
    except MissingMandatoryValue as err:
        raise SystemExit(f"error: {err.full_key} is required; pass {err.full_key}=<value>") from None
