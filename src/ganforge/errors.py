"""The one exception type for mistakes a user can fix, and how entry scripts report them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from omegaconf.errors import MissingMandatoryValue


class GanforgeError(Exception):
    """A user-fixable problem; entry scripts print its message on one line and exit non-zero."""


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn user mistakes into `error: <what to do>` on stderr and exit code 1 (no traceback)."""
    try:
        yield
    except GanforgeError as err:
        raise SystemExit(f"error: {err}") from None
    except MissingMandatoryValue as err:
        raise SystemExit(f"error: {err.full_key} is required; pass {err.full_key}=<value>") from None
