"""The trainer's profilers. `NoProfiler`, the default, profiles nothing at the least cost: Lightning's
own no-op (PassThroughProfiler) still builds a generator context around every hook of every
callback, about 5 Python calls each and ~90 hook calls a batch, a fifth of the Python calls of a
ganforge batch (bench/host_overhead.py). `ReportingProfiler` is `debug=profiler`'s: Lightning's
SimpleProfiler sends its table either to a file or to the log; this one sends it to both, so a
profiled run ends by showing where the time went and keeps the table in <run>/fit-<filename>.txt to
compare against later runs."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class ReportingProfiler(SimpleProfiler):
    def summary(self) -> str:
        """The table Lightning writes into the file once training ends, shown on the way."""
        table = super().summary()
        if table and self.filename and rank_zero_only.rank == 0:  # without a file Lightning logs it itself
            log.info("%s", table)
        return table


class NoProfiler(PassThroughProfiler):
    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> Any:
        return self._NOTHING
